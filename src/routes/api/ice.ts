import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { IceServersResponseSchema } from '../../../schemas/rest'
import { described, errorResponses, rateLimited } from '../../../schemas/common'
import { createIceServers } from '../../services/ice'

const iceRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const iceServers = createIceServers(fastify.config)
  fastify.get('/ice_servers', {
    schema: {
      operationId: 'getIceServers',
      tags: ['ice'],
      summary: 'STUN/TURN servers for RTCPeerConnection',
      description: 'With TURN_SECRET configured, TURN entries carry ephemeral credentials (TURN REST API: username `<unix expiry>:<id>`, credential base64(HMAC-SHA1(secret, username))).',
      response: rateLimited({ 200: described(IceServersResponseSchema, 'The ICE servers to give RTCPeerConnection'), ...errorResponses(429, 500) })
    }
  }, async (_request, reply) => {
    // Credentials are per request and expire: never let a cache hand them to someone else.
    reply.header('cache-control', 'no-store')
    return { iceServers: iceServers() }
  })
}

export default iceRoutes
