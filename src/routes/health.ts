import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Gauge } from 'prom-client'
import { HealthResponseSchema, NotReadyResponseSchema, ReadyResponseSchema, type HealthResponse } from '../../schemas/rest'
import { described } from '../../schemas/common'
import { version } from '../../package.json'

/** Liveness (never touches the store, so a Redis outage does not get instances killed) and readiness. */
const healthRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const health = (): HealthResponse => ({
    status: 'healthy',
    timestamp: new Date().toISOString(),
    uptime: Math.floor((Date.now() - fastify.lifecycle.startedAt) / 1000),
    service: 'privydrop-backend',
    version,
    environment: fastify.config.NODE_ENV
  })
  const healthSchema = (operationId: string) => ({ schema: { operationId, tags: ['health'], summary: 'Liveness (never touches the store)', response: { 200: described(HealthResponseSchema, 'The process is alive') } } })
  fastify.get('/health', healthSchema('getHealth'), async () => health())
  fastify.get('/api/health', healthSchema('getApiHealth'), async () => health())

  /** Whether to send traffic here: the store answers, the other instances are heard (in a cluster), not draining. */
  const readiness = async () => {
    const shuttingDown = fastify.lifecycle.shuttingDown
    // In a cluster an instance that cannot hear the others is not ready either.
    const storeOk = await fastify.store.ping().then(() => fastify.signaling.reachable(), () => false)
    const checks = { store: storeOk ? 'ok' : 'fail', shutdown: shuttingDown ? 'fail' : 'ok' } as const
    return { ready: storeOk && !shuttingDown, checks }
  }
  // The same answer as /ready, for dashboards and alerts (a scrape reaches an instance the load balancer has taken out).
  fastify.metrics.registry.registerMetric(new Gauge({
    name: 'privydrop_ready',
    help: '1 while GET /ready answers 200 (store reachable, other instances heard, not shutting down), 0 otherwise',
    registers: [],
    async collect () { this.set((await readiness()).ready ? 1 : 0) }
  }))

  fastify.get('/ready', {
    schema: {
      operationId: 'getReady',
      tags: ['health'],
      summary: 'Readiness: store reachable and not shutting down',
      response: { 200: described(ReadyResponseSchema, 'Ready: send traffic here'), 503: described(NotReadyResponseSchema, 'Not ready: take this instance out of the load balancer') }
    }
  }, async (_request, reply) => {
    const { ready, checks } = await readiness()
    return ready
      ? reply.status(200).send({ status: 'ready', checks })
      : reply.status(503).send({ status: 'unavailable', checks })
  })
}

export default healthRoutes
