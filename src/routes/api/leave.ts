import createError from '@fastify/error'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { LeaveRoomBodySchema, SuccessMessageSchema } from '../../../schemas/rest'
import { errorResponses } from '../../../schemas/common'

const ForbiddenError = createError('PRIVYDROP_FORBIDDEN', 'Unknown peer or wrong session token', 403)

/**
 * POST /api/leave_room: lets a closing page leave with navigator.sendBeacon.
 * The caller proves it is the peer with the session's current resumeToken.
 */
const leaveRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  // sendBeacon(url, string) cannot set a content type: the JSON arrives as
  // text/plain;charset=UTF-8 (a type that needs no CORS preflight, which a
  // beacon could not wait for). Parsers are encapsulated, so only this route
  // reads text/plain as JSON: Fastify's own JSON parser, with the same body
  // limit, the same prototype-poisoning rules and the same 400 for bad JSON.
  const { onProtoPoisoning = 'error', onConstructorPoisoning = 'error' } = fastify.initialConfig
  fastify.removeContentTypeParser('text/plain')
  fastify.addContentTypeParser('text/plain', { parseAs: 'string' }, fastify.getDefaultJsonParser(onProtoPoisoning, onConstructorPoisoning))

  fastify.post('/leave_room', {
    schema: {
      tags: ['rooms'],
      summary: 'Leave a room on behalf of a WebSocket session',
      description: 'For `navigator.sendBeacon` on page unload. `token` is the session\'s current resumeToken; an unknown peer or a wrong token is 403. The other members get `peer-disconnected`. Works on any instance. The JSON body may be sent as `text/plain` (what `sendBeacon` sends for a string).',
      consumes: ['application/json', 'text/plain'],
      body: LeaveRoomBodySchema,
      response: { 200: SuccessMessageSchema, ...errorResponses(400, 403, 429, 503) }
    }
  }, async (request) => {
    const { roomId, peerId, token } = request.body
    const result = await fastify.signaling.leaveWithToken(roomId, peerId, token)
    if (result === 'forbidden') throw new ForbiddenError()
    if (result === 'not_in_room') return { success: false, message: 'Peer is not in that room' }
    return { success: true, message: 'Successfully left the room' }
  })
}

export default leaveRoutes
