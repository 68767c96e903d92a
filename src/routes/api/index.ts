import type { FastifyPluginAsync } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { createRateLimitStore } from '../../redis/rate-limit-store'
import { redisKeys } from '../../redis/keys'
import roomRoutes from './rooms'
import trackingRoutes from './tracking'
import logsRoutes from './logs'
import iceRoutes from './ice'
import leaveRoutes from './leave'

export interface ApiRoutesOptions {
  /**
   * Whether the rate limiter should ask Redis; default: the command
   * connection's circuit breaker is closed (src/redis/link.ts).
   */
  redisUsable?: () => boolean
}

/**
 * The REST API under /api, rate limited per client IP (request.ip, which
 * honours TRUST_PROXY). In Redis mode the counters live in Redis so all
 * instances share them; while Redis is down or not usable they are kept in
 * memory with the same window and maximum (per instance, then), so an outage
 * never switches the limit off. The store-backed routes answer 503 themselves.
 */
const apiRoutes: FastifyPluginAsync<ApiRoutesOptions> = async (fastify, opts) => {
  const { config, redis, redisLink } = fastify
  await fastify.register(rateLimit, {
    max: config.API_RATE_LIMIT_MAX,
    timeWindow: config.API_RATE_LIMIT_WINDOW_S * 1000,
    ...(redis !== null && {
      store: createRateLimitStore({
        redis,
        nameSpace: redisKeys(config.KEY_PREFIX).apiLimitNamespace,
        usable: opts.redisUsable ?? (redisLink === null ? undefined : () => redisLink.healthy),
        log: fastify.log.child({ limiter: 'api' })
      })
    })
  })
  await fastify.register(roomRoutes)
  await fastify.register(leaveRoutes)
  await fastify.register(trackingRoutes)
  await fastify.register(iceRoutes)
  if (config.LOGS_DEBUG_ENABLED) await fastify.register(logsRoutes)
}

export default apiRoutes
