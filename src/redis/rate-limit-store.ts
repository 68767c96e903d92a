import LocalStore from '@fastify/rate-limit/store/LocalStore'
import RedisStore from '@fastify/rate-limit/store/RedisStore'
import type { FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from './client'

type Store = LocalStore.Store

export interface RateLimitStoreDeps {
  redis: RedisClient
  /** Prefix of the counters' keys, e.g. `<KEY_PREFIX>ratelimit:api:`. */
  nameSpace: string
  /**
   * Whether to ask Redis at all; default: its connection is ready. A circuit
   * breaker can supply a stricter one, so that a Redis that hangs instead of
   * refusing does not cost every request a command timeout.
   */
  usable?: () => boolean
  log: FastifyBaseLogger
}

/** Which store answers, shared by a store and its per-route children; logs each switch once, not per request. */
interface Source {
  redisUsable: () => boolean
  redisAnswered: () => void
  redisFailed: (err: Error) => void
}

function createSource (usable: () => boolean, log: FastifyBaseLogger): Source {
  let local = false
  const toLocal = (err?: Error) => {
    if (local) return
    local = true
    log.warn({ ...(err !== undefined && { err }) }, 'rate limit: Redis unusable, counting in memory on this instance until it is back')
  }
  return {
    redisUsable: () => {
      if (usable()) return true
      toLocal()
      return false
    },
    redisAnswered: () => {
      if (!local) return
      local = false
      log.info('rate limit: counting in Redis again')
    },
    redisFailed: toLocal
  }
}

/**
 * Counts in Redis (shared by every instance) while Redis is usable, and in
 * this process's memory otherwise, with the same window and maximum: an
 * outage makes the limit per instance instead of switching it off.
 */
class FallbackStore implements Store {
  constructor (private readonly remote: Store, private readonly local: Store, private readonly source: Source) {}

  incr (key: string, cb: LocalStore.Callback, timeWindow: number, max: number): void {
    // Every request is counted in memory too, not only once Redis fails: when
    // it does, a client's count goes on from what it spent at this instance
    // instead of restarting at zero with a whole new budget.
    this.local.incr(key, (localErr, localResult) => {
      if (!this.source.redisUsable()) {
        cb(localErr, localResult)
        return
      }
      this.remote.incr(key, (err, result) => {
        if (err === null) {
          this.source.redisAnswered()
          cb(null, result)
          return
        }
        this.source.redisFailed(err)
        cb(localErr, localResult)
      }, timeWindow, max)
    }, timeWindow, max)
  }

  read (key: string, cb: LocalStore.Callback, timeWindow: number, max: number): void {
    if (!this.source.redisUsable()) {
      this.local.read(key, cb, timeWindow, max)
      return
    }
    this.remote.read(key, (err, result) => {
      if (err === null) {
        cb(null, result)
        return
      }
      this.source.redisFailed(err)
      this.local.read(key, cb, timeWindow, max)
    }, timeWindow, max)
  }

  child (options: LocalStore.ChildOptions): FallbackStore {
    return new FallbackStore(this.remote.child(options), this.local.child(options), this.source)
  }
}

/** What @fastify/rate-limit passes a store's constructor (its merged options); only these two matter to a store. */
interface StoreParams { continueExceeding?: boolean, exponentialBackoff?: boolean }

/**
 * A store class for @fastify/rate-limit's `store` option (the plugin
 * constructs it itself, so the dependencies are closed over here).
 */
export function createRateLimitStore (deps: RateLimitStoreDeps): FastifyRateLimitStoreCtor {
  const { redis, nameSpace } = deps
  const source = createSource(deps.usable ?? (() => redis.status === 'ready'), deps.log)
  class RedisWithLocalFallback extends FallbackStore {
    constructor (params: StoreParams) {
      const continueExceeding = params.continueExceeding === true
      const exponentialBackoff = params.exponentialBackoff === true
      super(new RedisStore(continueExceeding, exponentialBackoff, redis, nameSpace), new LocalStore(continueExceeding, exponentialBackoff), source)
    }
  }
  // The plugin's typings give child() a route's options; it really passes the
  // merged rate-limit params with the route under `routeInfo` (see
  // @fastify/rate-limit index.js, mergeParams), which is what the stores use.
  return RedisWithLocalFallback as unknown as FastifyRateLimitStoreCtor
}
