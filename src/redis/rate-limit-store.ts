import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from './client'
import { scriptCaller } from './script'
import { countRequest } from './scripts'

/*
 * The REST limiter's store, on @fastify/rate-limit's documented store
 * interface (`FastifyRateLimitStore`: incr and child, constructed by the
 * plugin from its options) and nothing of its internals. It counts in Redis
 * (shared by every instance) while Redis is usable, and in this process's
 * memory otherwise, with the same window and maximum: an outage makes the
 * limit per instance instead of switching it off. One budget per client for
 * every /api route (child() shares the counters).
 */

export interface RateLimitStoreDeps {
  redis: RedisClient
  /** Prefix of the counters' keys, e.g. `<KEY_PREFIX>ratelimit:api:` (redisKeys().apiLimitNamespace). */
  nameSpace: string
  /**
   * Whether to ask Redis at all; default: its connection is ready. A circuit
   * breaker can supply a stricter one, so that a Redis that hangs instead of
   * refusing does not cost every request a command timeout.
   */
  usable?: () => boolean
  log: FastifyBaseLogger
  /** Most clients counted in memory at once (the oldest are forgotten first). Default 5000. */
  memoryMax?: number
}

type Result = { current: number, ttl: number }
type Callback = (error: Error | null, result?: Result) => void

/** Fixed windows per key in memory, bounded: a Map keeps insertion order, so the oldest goes first. */
class MemoryWindows {
  private readonly windows = new Map<string, { count: number, startedAt: number }>()
  constructor (private readonly max: number) {}

  incr (key: string, windowMs: number, now: number): Result {
    let w = this.windows.get(key)
    if (w === undefined || w.startedAt + windowMs <= now) {
      this.windows.delete(key)
      w = { count: 0, startedAt: now }
      if (this.windows.size >= this.max) this.windows.delete(this.windows.keys().next().value as string)
      this.windows.set(key, w)
    }
    w.count++
    return { current: w.count, ttl: w.startedAt + windowMs - now }
  }
}

export function createRateLimitStore (deps: RateLimitStoreDeps): FastifyRateLimitStoreCtor {
  const { redis } = deps
  const call = scriptCaller(redis, [countRequest])
  const usable = deps.usable ?? (() => redis.status === 'ready')
  const memory = new MemoryWindows(deps.memoryMax ?? 5000)
  // Which store answers; each switch is logged once, not per request.
  let local = false
  const toLocal = (err?: Error): void => {
    if (local) return
    local = true
    deps.log.warn({ ...(err !== undefined && { err }) }, 'rate limit: Redis unusable, counting in memory on this instance until it is back')
  }
  const toRedis = (): void => {
    if (!local) return
    local = false
    deps.log.info('rate limit: counting in Redis again')
  }

  class RedisWithMemoryFallback implements FastifyRateLimitStore {
    incr (key: string, cb: Callback, timeWindow: number): void {
      // Every request is counted in memory too, not only once Redis fails:
      // when it does, a client's count goes on from what it spent at this
      // instance instead of restarting at zero with a whole new budget.
      const counted = memory.incr(key, timeWindow, Date.now())
      if (!usable()) {
        toLocal()
        cb(null, counted)
        return
      }
      call(countRequest, { counter: deps.nameSpace + key }, { windowMs: timeWindow }).then((counted) => {
        toRedis()
        cb(null, counted)
      }, (err: Error) => {
        toLocal(err)
        cb(null, counted)
      })
    }

    child (): FastifyRateLimitStore {
      return this
    }
  }
  return RedisWithMemoryFallback
}
