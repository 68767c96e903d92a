import type { FastifyPluginAsync } from 'fastify'
import type { Registry } from 'prom-client'

export interface MetricsRoutesOptions {
  /** The app's registry: passed in, so the separate metrics listener serves the same route. */
  registry: Registry
}

/** Prometheus scrape endpoint. */
const metricsRoutes: FastifyPluginAsync<MetricsRoutesOptions> = async (fastify, { registry }) => {
  fastify.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type(registry.contentType).send(await registry.metrics())
  })
}

export default metricsRoutes
