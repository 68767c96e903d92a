import websocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import createError from '@fastify/error'
import { allowedOrigins } from '../config'
import { ShuttingDownError } from '../plugins/lifecycle'
import type { ConnectionHandle } from '../signaling/hub'
import { releaseUpgradeResponse, replaceErrorListener } from './ws-socket'

/** Where a socket keeps the hub's handle for its connection. */
const kHandle = Symbol('privydrop.connection')
interface Attached { [kHandle]: ConnectionHandle }
const handle = (socket: WebSocket): ConnectionHandle => (socket as WebSocket & Attached)[kHandle]
/** The upgrade's response (Fastify's reply.raw), from onRequest to the handler, which is not given the reply. */
const upgradeResponses = new WeakMap<IncomingMessage, ServerResponse>()

function onMessage (this: WebSocket, data: Buffer | string, isBinary: boolean): void { handle(this).message(data, isBinary) }
function onPong (this: WebSocket): void { handle(this).pong() }
function onClose (this: WebSocket, code: number): void { handle(this).closed(code) }
function onError (this: WebSocket): void { handle(this).protocolError() }

const OriginNotAllowedError = createError('PRIVYDROP_ORIGIN_NOT_ALLOWED', 'Origin not allowed', 403)
const TooManyConnectionsError = createError('PRIVYDROP_TOO_MANY_CONNECTIONS', 'Too many connections from this address', 429)
const CutOffError = createError('PRIVYDROP_CUT_OFF', 'This instance cannot reach Redis; connect to another instance', 503)

/**
 * GET /ws: the signaling WebSocket. Everything that can refuse a client
 * (shutdown, cut off from Redis, Origin allow-list, per-IP connection cap)
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
    // Callback style (an async hook costs a promise and a microtask hop per upgrade).
    onRequest: (request, reply, done) => {
      // Refused here, after @fastify/websocket's own onRequest hook, so the
      // error response still lets it destroy the upgrade socket.
      if (fastify.lifecycle.shuttingDown) {
        done(new ShuttingDownError())
        return
      }
      // Cut off from Redis, it has sent its clients elsewhere (REDIS_EVICT_AFTER_MS): they must not come back here.
      if (!signaling.accepting()) {
        done(new CutOffError())
        return
      }
      const origin = request.headers.origin
      if (origins !== true && origin !== undefined && !origins.includes(origin)) {
        request.log.info({ origin }, 'websocket refused: origin not allowed')
        done(new OriginNotAllowedError())
        return
      }
      // Held sessions count too: dropping connections must not farm them.
      const resume = typeof request.query.resume === 'string' ? request.query.resume : undefined
      if (signaling.connectionsFrom(request.ip, resume) >= config.MAX_CONNECTIONS_PER_IP) {
        done(new TooManyConnectionsError())
        return
      }
      // Across the fleet (Redis mode): one round trip, the per-instance cap above when Redis cannot answer.
      const cap = fastify.connectionCap
      const admit = (): void => {
        upgradeResponses.set(request.raw, reply.raw)
        done()
      }
      if (cap === null) admit()
      else cap.admit(request.ip, resume).then(admitted => { if (admitted) admit(); else done(new TooManyConnectionsError()) }, admit)
    }
  }, (socket, request) => {
    // Synchronous from here on: the welcome goes out and the listeners are
    // attached before the event loop can deliver a frame.
    ;(socket as WebSocket & Attached)[kHandle] = signaling.open(socket, { ip: request.ip, resumeToken: request.query.resume })
    // The same four listeners for every socket: they find its connection on it.
    socket.on('message', onMessage)
    socket.on('pong', onPong)
    socket.on('close', onClose)
    // Memory that would live as long as the connection (ws-socket.ts says why).
    replaceErrorListener(socket, onError)
    const response = upgradeResponses.get(request.raw)
    if (response !== undefined) {
      // Deleted at once, not left for the key's collection: while an entry
      // lives, scavenges keep its value (the response, and through it the
      // request, Fastify's request and reply) and promote them to die in the
      // old generation: 2.2 KiB more committed heap per idle connection.
      upgradeResponses.delete(request.raw)
      releaseUpgradeResponse(response)
    }
  })
}

export default wsRoutes
