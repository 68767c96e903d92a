import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import createError from '@fastify/error'

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: { readonly startedAt: number, readonly instanceId: string, shuttingDown: boolean }
  }
}

/** New work refused while draining (answered 503 by the error handler). */
export const ShuttingDownError = createError('PRIVYDROP_SHUTTING_DOWN', 'Server is shutting down', 503)

/**
 * Routes that still answer while draining: probes must see the instance go
 * unready. /metrics counts only where METRICS_ON_MAIN_PORT serves it there;
 * the METRICS_PORT listener is a separate instance that never drains early.
 */
const PROBES = new Set(['/health', '/api/health', '/ready', '/metrics'])

/**
 * Tracks whether the instance is draining and refuses new work meanwhile.
 * This replaces Fastify's return503OnClosing, which answers before any hook
 * runs: a refused WebSocket upgrade would then keep its raw socket open and
 * hold shutdown up until the timeout. Upgrades are left to the /ws route,
 * whose refusal runs after @fastify/websocket has marked the request, so its
 * onResponse hook destroys the socket.
 */
export default fp(async (fastify) => {
  // A suffix per start: a restarted instance with the same INSTANCE_ID must not
  // receive (and refuse) what others still address to its previous run.
  const suffix = randomBytes(4).toString('hex')
  const instanceId = fastify.config.INSTANCE_ID === undefined ? suffix : `${fastify.config.INSTANCE_ID}.${suffix}`
  fastify.decorate('lifecycle', { startedAt: Date.now(), instanceId, shuttingDown: false })
  fastify.log.info({ instanceId }, 'instance starting')
  fastify.addHook('preClose', async () => {
    fastify.lifecycle.shuttingDown = true
  })
  // Callback style: it runs on every request, and an async hook costs a promise and a microtask hop.
  fastify.addHook('onRequest', (request, reply, done) => {
    if (!fastify.lifecycle.shuttingDown || request.headers.upgrade !== undefined || PROBES.has(request.url.split('?', 1)[0] ?? '')) {
      done()
      return
    }
    reply.header('connection', 'close')
    done(new ShuttingDownError())
  })
}, { name: 'lifecycle', fastify: '5.x', dependencies: ['config'] })
