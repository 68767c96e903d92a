import websocket from '@fastify/websocket'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { allowedOrigins } from '../config'

/**
 * GET /ws: the signaling WebSocket. Everything that can refuse a client
 * (shutdown, Origin allow-list, per-IP connection cap)
 * runs in onRequest, so a refusal is a plain HTTP status before any upgrade.
 */
const wsRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, signaling } = fastify
  const origins = allowedOrigins(config.CORS_ORIGIN)

  await fastify.register(websocket, {
    options: { maxPayload: config.MAX_MESSAGE_BYTES },
    // The hub drains sockets on close (signaling plugin); nothing to do here.
    preClose: (done) => done(),
    // ws reports a rejected frame (oversize → 1009, bad UTF-8 → 1007) after it
    // has already started closing with the right code: let that close finish.
    errorHandler: (err, socket, request) => {
      request.log.debug({ err: { code: (err as { code?: string }).code, message: err.message } }, 'websocket error')
      if (socket.readyState === socket.OPEN) socket.terminate()
    }
  })

  fastify.get('/ws', {
    websocket: true,
    schema: { querystring: Type.Object({ resume: Type.Optional(Type.String()) }) },
    onRequest: async (request, reply) => {
      if (fastify.lifecycle.shuttingDown) {
        return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', message: 'Server is shutting down' })
      }
      const origin = request.headers.origin
      if (origins !== true && origin !== undefined && !origins.includes(origin)) {
        request.log.info({ origin }, 'websocket refused: origin not allowed')
        return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'Origin not allowed' })
      }
      if (signaling.connectionsFrom(request.ip) >= config.MAX_CONNECTIONS_PER_IP) {
        return reply.code(429).send({ statusCode: 429, error: 'Too Many Requests', message: 'Too many connections from this address' })
      }
    }
  }, (socket, request) => {
    // Synchronous from here on: the welcome goes out and the listeners are
    // attached before the event loop can deliver a frame.
    const conn = signaling.open(socket, { ip: request.ip, resumeToken: request.query.resume })
    socket.on('message', conn.message)
    socket.on('pong', conn.pong)
    socket.on('close', conn.closed)
    // @fastify/websocket's own error listener closes over the upgrade request
    // and reply, keeping them alive as long as the socket (KiBs per idle
    // connection). The hub handles socket errors itself, so replace it.
    socket.removeAllListeners('error')
    socket.on('error', conn.protocolError)
  })
}

export default wsRoutes
