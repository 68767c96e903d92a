// @fastify/rate-limit ships its two built-in stores as untyped CommonJS; these
// are their signatures as of v11 (store/LocalStore.js, store/RedisStore.js).
// The interface both implement is declared once, beside LocalStore.

declare module '@fastify/rate-limit/store/LocalStore' {
  namespace LocalStore {
    interface Result { current: number, ttl: number }
    type Callback = (err: Error | null, result?: Result) => void
    /** What child() gets: the merged per-route params, `routeInfo` being the route's options. */
    interface ChildOptions {
      continueExceeding?: boolean
      exponentialBackoff?: boolean
      cache?: number
      routeInfo: { method?: string | string[], url?: string }
    }
    interface Store {
      incr (key: string, cb: Callback, timeWindow: number, max: number): void
      read (key: string, cb: Callback, timeWindow: number, max: number): void
      child (options: ChildOptions): Store
    }
  }
  class LocalStore implements LocalStore.Store {
    constructor (continueExceeding: boolean, exponentialBackoff: boolean, cache?: number)
    incr (key: string, cb: LocalStore.Callback, timeWindow: number, max: number): void
    read (key: string, cb: LocalStore.Callback, timeWindow: number, max: number): void
    child (options: LocalStore.ChildOptions): LocalStore
  }
  export = LocalStore
}

declare module '@fastify/rate-limit/store/RedisStore' {
  import type { Cluster, Redis } from 'ioredis'
  import type LocalStore from '@fastify/rate-limit/store/LocalStore'
  class RedisStore implements LocalStore.Store {
    constructor (continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis | Cluster, key?: string)
    incr (key: string, cb: LocalStore.Callback, timeWindow: number, max: number): void
    read (key: string, cb: LocalStore.Callback, timeWindow: number, max: number): void
    child (options: LocalStore.ChildOptions): RedisStore
  }
  export = RedisStore
}
