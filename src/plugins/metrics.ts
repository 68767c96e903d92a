import fp from 'fastify-plugin'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { version } from '../../package.json'
import { PROTOCOL_VERSION } from '../../schemas/ws'
import { INSTANCE_PROTOCOL, INSTANCE_PROTOCOLS } from '../instance-protocol'

export function createMetrics () {
  // One registry per app instance: prom-client's global registry would be
  // shared by every app in a process (tests, multi-instance harnesses).
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  // What runs where during a rolling deploy: one series per instance, always 1.
  new Gauge({
    name: 'privydrop_build_info',
    help: 'Always 1: the release (version), the highest instance protocol it speaks (protocol; it also speaks the ones in protocols), and the /ws protocol (wire)',
    labelNames: ['version', 'protocol', 'protocols', 'wire'] as const,
    registers: [registry]
  }).set({ version, protocol: String(INSTANCE_PROTOCOL), protocols: INSTANCE_PROTOCOLS.join(','), wire: String(PROTOCOL_VERSION) }, 1)
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
  // Labelled children resolved once per method, route and status: prom-client
  // otherwise validates and hashes the label object on every request.
  const counted = new Map<string, { inc: () => void }>()
  const timed = new Map<string, { observe: (seconds: number) => void }>()
  // Callback style: an async hook costs a promise and a microtask hop per request.
  fastify.addHook('onResponse', (request, reply, done) => {
    // The route pattern, not the URL, keeps label cardinality bounded.
    const route = request.routeOptions.url ?? 'unmatched'
    const method = request.method
    const status = reply.statusCode
    const routeKey = `${method} ${route}`
    const countKey = `${routeKey} ${status}`
    let count = counted.get(countKey)
    if (count === undefined) {
      count = metrics.httpRequests.labels({ method, route, status_code: status })
      counted.set(countKey, count)
    }
    let time = timed.get(routeKey)
    if (time === undefined) {
      time = metrics.httpDuration.labels({ method, route })
      timed.set(routeKey, time)
    }
    count.inc()
    time.observe(reply.elapsedTime / 1000)
    done()
  })
}, { name: 'metrics', fastify: '5.x' })
