import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import type { Config } from '../../schemas/config'
import { createMemoryStore } from '../store/memory'
import { createRedisStore } from '../store/redis'
import { createRedisClient, redisConfigured } from '../redis/client'
import type { Store, StoreLimits } from '../store/types'

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
    /** The command connection in Redis mode, null on the in-memory store. */
    redis: Redis | null
  }
}

function limits (config: Config, instanceId: string): StoreLimits {
  return {
    instanceId,
    roomTtlS: config.ROOM_TTL_S,
    roomEmptyTtlS: config.ROOM_EMPTY_TTL_S,
    joinLimitMax: config.JOIN_RATE_LIMIT_MAX,
    joinLimitWindowMs: config.JOIN_RATE_LIMIT_WINDOW_S * 1000
  }
}

/** Chooses the store from config: Redis when configured, otherwise in-memory (one instance only). */
export default fp(async (fastify) => {
  const { config } = fastify
  if (!redisConfigured(config)) {
    fastify.log.warn('no REDIS_URL/REDIS_HOST: using the in-memory store; state is not shared, run a single instance only')
    const store = createMemoryStore(limits(config, fastify.lifecycle.instanceId))
    fastify.decorate('store', store)
    fastify.decorate('redis', null)
    fastify.addHook('onClose', async () => { await store.close() })
    return
  }

  const redis = createRedisClient(config, fastify.log, 'commands')
  try {
    await redis.connect()
  } catch (err) {
    // Not fatal: the client keeps reconnecting, /ready reports 503 meanwhile.
    fastify.log.warn({ err }, 'redis unreachable at startup; serving 503 for store-backed requests until it is back')
  }
  const store = createRedisStore({ ...limits(config, fastify.lifecycle.instanceId), redis, keyPrefix: config.KEY_PREFIX })
  fastify.decorate('store', store)
  fastify.decorate('redis', redis)
  fastify.addHook('onClose', async () => {
    await store.close()
    await redis.quit().catch(() => redis.disconnect())
  })
}, { name: 'store', fastify: '5.x', dependencies: ['config', 'lifecycle'] })
