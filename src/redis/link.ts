import { Cluster } from 'ioredis'
import type { RedisClient } from './client'

/** Bytes waiting to be written to Redis (to every node of a cluster). */
function bufferedBytes (redis: RedisClient): number {
  if (!(redis instanceof Cluster)) return redis.stream?.writableLength ?? 0
  return redis.nodes('all').reduce((sum, node) => sum + (node.stream?.writableLength ?? 0), 0)
}

/** Destroys the sockets (each node's, in a cluster); ioredis reconnects by itself. */
function dropSockets (redis: RedisClient): void {
  for (const node of redis instanceof Cluster ? redis.nodes('all') : [redis]) node.stream?.destroy()
}
import { StoreUnavailableError } from '../store/types'
import { Waiters } from '../waiters'
import type { Logger } from '../signaling/types'

/*
 * A circuit breaker around the command connection. A Redis that refuses
 * connections fails every command at once (no offline queue), but a Redis
 * that hangs (stopped process, swapping host, a long KEYS) accepts bytes and
 * answers nothing: every command waits its full timeout while the socket's
 * write buffer grows with whatever is sent meanwhile, and all of it is applied
 * when Redis wakes up, although each caller was told "unavailable" long ago.
 *
 * So:
 * - the first command that times out opens the circuit: from then on every
 *   operation fails at once without writing anything, and the connection is
 *   dropped, which frees its write buffer and command queue;
 * - a health check (TIME) every `healthIntervalMs` closes it again once Redis
 *   answers in time, and opens it when a Redis with no traffic stops answering,
 *   so /ready follows within about healthIntervalMs + timeoutMs either way;
 * - writes carry a deadline in Redis's own clock (`deadline()`, learnt from the
 *   same TIME replies). Every mutating script checks it first (FRESH in
 *   script.ts): bytes that reach a hung Redis and run after it wakes up are
 *   refused there, so an operation reported unavailable is never applied later.
 *   The deadline falls a margin before the caller's timeout, so a write that
 *   ran in time normally also answered in time.
 */

export interface RedisLinkOptions {
  redis: RedisClient
  log: Logger
  /** The command timeout the client was created with (ms). */
  timeoutMs: number
  healthIntervalMs: number
  /** Bytes waiting in the connection's write buffer beyond which new operations fail fast. */
  maxWriteBufferBytes: number
}

/** Health checks whose clock offsets are remembered (the quickest one is used). */
const OFFSET_WINDOW = 30

/** The reply error of a script whose deadline had passed when Redis ran it. */
const EXPIRED = 'EXPIRED'

export class RedisLink {
  private healthyNow = false
  private offsetMs = 0
  /** Recent health checks' clock offsets with their round trips: the quickest is the most exact. */
  private readonly samples: Array<{ rtt: number, offset: number }> = []
  /**
   * Counts connections. A command that was sent on a connection that has
   * since been dropped still times out later (ioredis does not reject it on
   * close): that says nothing about the current connection and must not trip it.
   */
  private generation = 0
  private readonly budgetMs: number
  private readonly timer: NodeJS.Timeout
  /** The connection a health check is running on (one at a time per connection). */
  private checking: number | null = null
  private stopped = false
  private readonly waiters = new Waiters()
  private readonly listeners = new Set<(healthy: boolean) => void>()

  constructor (private readonly opts: RedisLinkOptions) {
    // The deadline leaves a quarter of the timeout for the reply to come back.
    this.budgetMs = Math.max(1, Math.floor(opts.timeoutMs * 3 / 4))
    opts.redis.on('ready', () => { this.check().catch(() => {}) })
    opts.redis.on('close', () => {
      this.generation++
      this.trip('connection closed', false)
    })
    this.timer = setInterval(() => { this.check().catch(() => {}) }, opts.healthIntervalMs)
    this.timer.unref()
  }

  /** Whether operations are let through (the last health check or command answered in time). */
  get healthy (): boolean {
    return this.healthyNow
  }

  /** Redis-clock time (ms) after which a write sent now must not be applied. */
  deadline (): number {
    return Date.now() + this.offsetMs + this.budgetMs
  }

  /**
   * Runs an operation on Redis unless the circuit is open. Any failure becomes
   * StoreUnavailableError; a timeout or an expired deadline opens the circuit.
   */
  async run<T> (op: () => Promise<T>): Promise<T> {
    if (!this.healthyNow) throw unavailable(new Error('redis circuit open'), false)
    const buffered = bufferedBytes(this.opts.redis)
    if (buffered > this.opts.maxWriteBufferBytes) {
      this.trip(`write buffer at ${buffered} bytes`, true)
      throw unavailable(new Error('redis write buffer full'), false)
    }
    const generation = this.generation
    try {
      return await op()
    } catch (err) {
      this.failed(err, generation)
      throw unavailable(err, wasSent(err))
    }
  }

  /** Calls `fn` each time the circuit opens (false) or closes (true); returns the unsubscribe function. */
  onChange (fn: (healthy: boolean) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  private changed (healthy: boolean): void {
    for (const fn of [...this.listeners]) fn(healthy)
  }

  /** Resolves once the circuit is closed (at once if it is), or after `ms`. */
  async waitHealthy (ms: number): Promise<boolean> {
    if (this.healthyNow) return true
    await this.waiters.wait(ms)
    return this.healthyNow
  }

  /** One health check: TIME within the timeout closes the circuit (and sets the clock offset). */
  async check (): Promise<void> {
    // A check still waiting on a dropped connection must not hold up one on the new connection.
    if (this.checking === this.generation || this.stopped) return
    const { redis } = this.opts
    if (redis.status !== 'ready') {
      this.trip(`connection ${redis.status}`, false)
      return
    }
    const generation = this.generation
    this.checking = generation
    try {
      const sentAt = Date.now()
      const [seconds, micros] = await redis.time()
      const receivedAt = Date.now()
      this.sample(receivedAt - sentAt, Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Math.round((sentAt + receivedAt) / 2))
      if (generation !== this.generation) return // answered on a connection since dropped
      if (!this.healthyNow && !this.stopped) {
        this.healthyNow = true
        this.opts.log.info({ offsetMs: this.offsetMs }, 'redis answering again; circuit closed')
        this.waiters.wakeAll()
        this.changed(true)
      }
    } catch (err) {
      this.failed(err, generation)
    } finally {
      if (this.checking === generation) this.checking = null
    }
  }

  /**
   * The clock offset is off by up to half the round trip of the sample it
   * comes from: the quickest of the recent samples is used, so a reply that
   * sat in a busy event loop does not shift every deadline, and a clock step
   * is followed within a window.
   */
  private sample (rtt: number, offset: number): void {
    this.samples.push({ rtt, offset })
    if (this.samples.length > OFFSET_WINDOW) this.samples.shift()
    let best = this.samples[0] as { rtt: number, offset: number }
    for (const s of this.samples) if (s.rtt <= best.rtt) best = s
    this.offsetMs = best.offset
  }

  /** A failed command: only a failure of the current connection says anything about it. */
  private failed (err: unknown, generation: number): void {
    if (generation !== this.generation || !isLinkFailure(err)) return
    // A script that ran past its deadline: Redis answers, but too late.
    // Fail fast until a health check is quick again, keeping the connection
    // and the replies still arriving on it.
    const expired = err instanceof Error && err.message.startsWith(EXPIRED)
    this.trip((err as Error).message, !expired)
  }

  /** Opens the circuit; with `drop`, also drops the connection so nothing piles up behind a hung Redis. */
  private trip (reason: string, drop: boolean): void {
    const { redis } = this.opts
    if (this.healthyNow) {
      this.healthyNow = false
      this.opts.log.warn({ reason }, 'redis not answering; failing fast until a health check passes')
      this.changed(false)
    }
    // A live socket to a Redis that does not answer: destroying it discards
    // the bytes still in our buffer (an orderly close would flush them) and
    // ioredis reconnects by itself. Scripts already on Redis's side are
    // stopped by their deadline.
    if (drop && !this.stopped && redis.status === 'ready') dropSockets(redis)
  }

  stop (): void {
    this.stopped = true
    clearInterval(this.timer)
    this.waiters.wakeAll()
  }
}

/**
 * The error every failed operation becomes. `sent` says whether the command
 * may have reached Redis: false when it failed before anything was written
 * (circuit open, buffer full, no connection), so it was certainly not
 * applied; true when it was written and no answer came (a timeout, a
 * connection lost before the reply), so it may have run.
 */
function unavailable (cause: unknown, sent: boolean): InstanceType<typeof StoreUnavailableError> & { sent: boolean } {
  return Object.assign(new StoreUnavailableError({ cause }), { sent })
}

/**
 * ioredis refuses a command at once, writing nothing, while it has no
 * writable connection (no offline queue). Anything else (a timeout, the
 * connection closing with commands in flight) may have run.
 */
function wasSent (err: unknown): boolean {
  if (!(err instanceof Error)) return true
  // A script that found its deadline passed did nothing (FRESH in script.ts): certainly not applied.
  return !(err.message.startsWith('Stream isn\'t writeable') || err.message.startsWith(EXPIRED))
}

/** A failure of the link itself (timeout, closed socket, expired deadline), not a reply like WRONGTYPE. */
function isLinkFailure (err: unknown): boolean {
  if (!(err instanceof Error)) return true
  if (err.name === 'ReplyError') return err.message.startsWith(EXPIRED)
  return true
}
