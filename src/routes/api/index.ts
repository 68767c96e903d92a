import type { FastifyPluginAsync } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import roomRoutes from './rooms'
import trackingRoutes from './tracking'
import logsRoutes from './logs'
import iceRoutes from './ice'
import leaveRoutes from './leave'

/**
 * The REST API under /api, rate limited per client IP (request.ip, which
 * honours TRUST_PROXY). In Redis mode the counters live in Redis so all
 * instances share them; when Redis is down the limiter lets requests through
 * (skipOnError) and the store-backed routes answer 503 themselves.
 */
const apiRoutes: FastifyPluginAsync = async (fastify) => {
  const { config } = fastify
  await fastify.register(rateLimit, {
    max: config.API_RATE_LIMIT_MAX,
    timeWindow: config.API_RATE_LIMIT_WINDOW_S * 1000,
    ...(fastify.redis !== null && {
      redis: fastify.redis,
      nameSpace: `${config.KEY_PREFIX}ratelimit:api:`,
      skipOnError: true
    })
  })
  await fastify.register(roomRoutes)
  await fastify.register(leaveRoutes)
  await fastify.register(trackingRoutes)
  await fastify.register(iceRoutes)
  if (config.LOGS_DEBUG_ENABLED) await fastify.register(logsRoutes)
}

export default apiRoutes
