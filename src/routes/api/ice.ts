import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { IceServersResponseSchema } from '../../../schemas/rest'
import { iceServers } from '../../services/ice'

const iceRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/ice_servers', {
    schema: { response: { 200: IceServersResponseSchema } }
  }, async (_request, reply) => {
    // Credentials are per request and expire: never let a cache hand them to someone else.
    reply.header('cache-control', 'no-store')
    return { iceServers: iceServers(fastify.config) }
  })
}

export default iceRoutes
