import fp from 'fastify-plugin'
import type { Config } from '../../schemas/config'
import { createMemoryStore } from '../store/memory'
import { createRedisStore } from '../store/redis'
import { connectWithin, createRedisClient, redisConfigured, type RedisClient } from '../redis/client'
import { RedisLink } from '../redis/link'
import { instanceRecordTtlS } from '../redis/keys'
import type { Store, StoreLimits } from '../store/types'

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
    /** The command connection in Redis mode, null on the in-memory store. */
    redis: RedisClient | null
    /** Its circuit breaker: whatever uses `redis` goes through it (null on the in-memory store). */
    redisLink: RedisLink | null
  }
}

function limits (config: Config, instanceId: string): StoreLimits {
  return {
    instanceId,
    roomTtlS: config.ROOM_TTL_S,
    roomEmptyTtlS: config.ROOM_EMPTY_TTL_S,
    joinLimitMax: config.JOIN_RATE_LIMIT_MAX,
    joinLimitWindowMs: config.JOIN_RATE_LIMIT_WINDOW_S * 1000,
    trackMaxRefsPerDay: config.TRACK_MAX_REFS_PER_DAY
  }
}

export interface StorePluginOptions {
  /** The in-memory store's clock (default `Date.now`); the Redis store keeps Redis's. */
  memoryStoreNow?: () => number
}

/** Chooses the store from config: Redis when configured, otherwise in-memory (one instance only). */
export default fp<StorePluginOptions>(async (fastify, opts) => {
  const { config } = fastify
  if (!redisConfigured(config)) {
    fastify.log.warn('no REDIS_URL/REDIS_HOST: using the in-memory store; state is not shared, run a single instance only')
    const store = createMemoryStore({ ...limits(config, fastify.lifecycle.instanceId), now: opts.memoryStoreNow })
    fastify.decorate('store', store)
    fastify.decorate('redis', null)
    fastify.decorate('redisLink', null)
    fastify.addHook('onClose', async () => { await store.close() })
    return
  }

  const redis = createRedisClient(config, fastify.log, 'commands')
  const link = new RedisLink({
    redis,
    log: fastify.log.child({ redis: 'commands' }),
    timeoutMs: config.REDIS_CONNECT_TIMEOUT_MS,
    healthIntervalMs: config.REDIS_HEALTH_INTERVAL_MS,
    maxWriteBufferBytes: config.REDIS_MAX_WRITE_BUFFER_BYTES
  })
  try {
    await connectWithin(redis, config.REDIS_CONNECT_TIMEOUT_MS)
    // The first health check learns Redis's clock, which every write's deadline needs.
    await link.waitHealthy(config.REDIS_CONNECT_TIMEOUT_MS)
  } catch (err) {
    // Not fatal: the client keeps reconnecting, /ready reports 503 meanwhile.
    fastify.log.warn({ err }, 'redis unreachable at startup; serving 503 for store-backed requests until it is back')
  }
  const store = createRedisStore({
    ...limits(config, fastify.lifecycle.instanceId),
    redis,
    link,
    keyPrefix: config.KEY_PREFIX,
    ownedTtlS: instanceRecordTtlS({ deadAfterMs: config.INSTANCE_DEAD_AFTER_MS, resumeGraceMs: config.RESUME_GRACE_MS, sessionTtlS: config.ROOM_TTL_S })
  })
  fastify.decorate('store', store)
  fastify.decorate<RedisClient | null>('redis', redis)
  fastify.decorate('redisLink', link)
  fastify.addHook('onClose', async () => {
    link.stop()
    await store.close()
    await redis.quit().catch(() => redis.disconnect())
  })
}, { name: 'store', fastify: '5.x', dependencies: ['config', 'lifecycle'] })
