import createError from '@fastify/error'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { LeaveRoomBodySchema, LeaveRoomOrLegacyBodySchema, SuccessMessageSchema, type LeaveRoomBody, type LeaveRoomOrLegacyBody } from '../../../schemas/rest'
import { BODY_ERRORS, described, errorResponses, rateLimited } from '../../../schemas/common'

const ForbiddenError = createError('PRIVYDROP_FORBIDDEN', 'Unknown peer or wrong session token', 403)

/**
 * POST /api/leave_room: lets a closing page leave with navigator.sendBeacon.
 * The caller proves it is the peer with the session's current resumeToken.
 * With LEGACY_LEAVE_ROOM the old web app's `{ roomId, socketId }` is accepted
 * too, on the peer id alone; the body schema (and so the OpenAPI document)
 * says which bodies this instance takes.
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

  const legacy = fastify.config.LEGACY_LEAVE_ROOM
  const description = 'For `navigator.sendBeacon` on page unload. `token` is the session\'s current resumeToken; an unknown peer or a wrong token is 403. The other members get `peer-disconnected`. Works on any instance. The JSON body may be sent as `text/plain` (what `sendBeacon` sends for a string).'

  fastify.post('/leave_room', {
    schema: {
      operationId: 'leaveRoom',
      tags: ['rooms'],
      summary: 'Leave a room on behalf of a WebSocket session',
      description: legacy
        ? `${description} This instance runs with LEGACY_LEAVE_ROOM: the old body \`{ roomId, socketId }\` (socketId = peer id) is accepted without a token; an unknown peer answers \`success: false\`.`
        : description,
      consumes: ['application/json', 'text/plain'],
      // Only a server that takes the old body says so in its schema.
      body: legacy ? LeaveRoomOrLegacyBodySchema : LeaveRoomBodySchema,
      response: rateLimited({ 200: described(SuccessMessageSchema, 'Left (or, with the legacy body, `success:false` for an unknown peer)'), ...errorResponses(...BODY_ERRORS, 403, 429, 500, 503) })
    }
  }, async (request) => {
    const body: LeaveRoomOrLegacyBody = request.body
    const result = isTokenBody(body)
      ? await fastify.signaling.leaveWithToken(body.roomId, body.peerId, body.token)
      : await fastify.signaling.leaveByPeerId(body.roomId, body.socketId)
    if (result === 'forbidden') throw new ForbiddenError()
    if (result === 'not_in_room') return { success: false, message: 'Peer is not in that room' }
    return { success: true, message: 'Successfully left the room' }
  })
}

/** The token body wins whenever it is there (a body may carry both shapes' fields). */
function isTokenBody (body: LeaveRoomOrLegacyBody): body is LeaveRoomBody {
  return 'peerId' in body && 'token' in body
}

export default leaveRoutes
