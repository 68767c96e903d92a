import fp from 'fastify-plugin'
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import errorsPlugin from './errors'
import metricsRoutes from '../routes/metrics'

/**
 * GET /metrics on its own listener (METRICS_HOST:METRICS_PORT), so that the
 * scrape endpoint, which reveals process, runtime and load details, can stay
 * off the public port. It is a second, bare Fastify instance rather than a
 * route on the app: nothing else of the app (routes, CORS, rate limits,
 * draining) reaches that port, unknown paths are Fastify's usual 404, and the
 * route is the one the main port serves, over the same registry.
 *
 * It listens in onReady, not onListen: an onListen error is only logged, and
 * a port that cannot be bound must stop start-up. It closes in onClose, after
 * the main server has drained, so the drain itself can still be scraped.
 */
export default fp(async (fastify) => {
  const { METRICS_PORT: port, METRICS_HOST: host, PORT, METRICS_ON_MAIN_PORT } = fastify.config
  const log = fastify.log.child({ listener: 'metrics' })
  if (port === undefined) {
    if (!METRICS_ON_MAIN_PORT) log.info('no metrics listener (METRICS_PORT unset) and none on the main port: /metrics is not served')
    return
  }
  // Would otherwise surface as the main port's EADDRINUSE, which names neither variable.
  if (port === PORT) throw new Error(`METRICS_PORT must differ from PORT (both ${port})`)

  let listener: FastifyInstance | undefined
  fastify.addHook('onReady', async () => {
    const server = Fastify({
      loggerInstance: log,
      // Scrapes come every few seconds; logging each would drown the app's lines.
      logController: new LogController({ disableRequestLogging: true }),
      // Slowloris guard, as on the main port.
      requestTimeout: 30_000
    })
    await server.register(errorsPlugin)
    await server.register(metricsRoutes, { registry: fastify.metrics.registry })
    try {
      await server.listen({ host, port })
    } catch (err) {
      await server.close()
      // The cause's message only: pino would print an attached `cause` a second time.
      throw new Error(`metrics listener could not listen on ${host}:${port} (METRICS_HOST, METRICS_PORT): ${(err as Error).message}`)
    }
    listener = server
  })
  fastify.addHook('onClose', async () => {
    await listener?.close()
  })
}, { name: 'metrics-listener', fastify: '5.x', dependencies: ['config', 'metrics'] })
