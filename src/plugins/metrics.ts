import fp from 'fastify-plugin'
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export function createMetrics () {
  // One registry per app instance: prom-client's global registry would be
  // shared by every app in a process (tests, multi-instance harnesses).
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  return {
    registry,
    httpRequests: new Counter({
      name: 'privydrop_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status_code'] as const,
      registers: [registry]
    }),
    httpDuration: new Histogram({
      name: 'privydrop_http_request_duration_seconds',
      help: 'HTTP request duration by route',
      labelNames: ['method', 'route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry]
    })
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ReturnType<typeof createMetrics>
  }
}

export default fp(async (fastify) => {
  const metrics = createMetrics()
  fastify.decorate('metrics', metrics)
  fastify.addHook('onResponse', async (request, reply) => {
    // The route pattern, not the URL, keeps label cardinality bounded.
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.httpRequests.inc({ method: request.method, route, status_code: reply.statusCode })
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000)
  })
}, { name: 'metrics', fastify: '5.x' })
