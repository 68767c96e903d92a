import type { Redis } from 'ioredis'
import { StoreUnavailableError } from '../store/types'
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
 *   keys.ts): bytes that reach a hung Redis and run after it wakes up are
 *   refused there, so an operation reported unavailable is never applied later.
 *   The deadline falls a margin before the caller's timeout, so a write that
 *   ran in time normally also answered in time.
 */

export interface RedisLinkOptions {
  redis: Redis
  log: Logger
  /** The command timeout the client was created with (ms). */
  timeoutMs: number
  healthIntervalMs: number
  /** Bytes waiting in the connection's write buffer beyond which new operations fail fast. */
  maxWriteBufferBytes: number
}

/** Health checks slower than this round trip do not update the clock offset. */
const OFFSET_SAMPLE_MAX_RTT_MS = 50

/** The reply error of a script whose deadline had passed when Redis ran it. */
const EXPIRED = 'EXPIRED'

export class RedisLink {
  private healthyNow = false
  private offsetMs = 0
  private offsetKnown = false
  private readonly budgetMs: number
  private readonly timer: NodeJS.Timeout
  private checking = false
  private stopped = false
  private readonly waiters = new Set<() => void>()

  constructor (private readonly opts: RedisLinkOptions) {
    // The deadline leaves a quarter of the timeout for the reply to come back.
    this.budgetMs = Math.max(1, Math.floor(opts.timeoutMs * 3 / 4))
    opts.redis.on('ready', () => { this.check().catch(() => {}) })
    opts.redis.on('close', () => { this.trip('connection closed') })
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
    if (!this.healthyNow) throw new StoreUnavailableError({ cause: new Error('redis circuit open') })
    const buffered = this.opts.redis.stream?.writableLength ?? 0
    if (buffered > this.opts.maxWriteBufferBytes) {
      this.trip(`write buffer at ${buffered} bytes`)
      throw new StoreUnavailableError({ cause: new Error('redis write buffer full') })
    }
    try {
      return await op()
    } catch (err) {
      if (isLinkFailure(err)) this.trip((err as Error).message)
      throw new StoreUnavailableError({ cause: err })
    }
  }

  /** Resolves once the circuit is closed (at once if it is), or after `ms`. */
  async waitHealthy (ms: number): Promise<boolean> {
    if (this.healthyNow) return true
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.waiters.add(done)
    })
    return this.healthyNow
  }

  /** One health check: TIME within the timeout closes the circuit (and sets the clock offset). */
  async check (): Promise<void> {
    if (this.checking || this.stopped) return
    const { redis } = this.opts
    if (redis.status !== 'ready') {
      this.trip(`connection ${redis.status}`)
      return
    }
    this.checking = true
    try {
      const sentAt = Date.now()
      const [seconds, micros] = await redis.time()
      const receivedAt = Date.now()
      // The offset is off by up to half the round trip: a reply that sat in a
      // busy event loop would shift every deadline, so only quick samples count.
      if (!this.offsetKnown || receivedAt - sentAt <= OFFSET_SAMPLE_MAX_RTT_MS) {
        this.offsetMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Math.round((sentAt + receivedAt) / 2)
        this.offsetKnown = true
      }
      if (!this.healthyNow && !this.stopped) {
        this.healthyNow = true
        this.opts.log.info({ offsetMs: this.offsetMs }, 'redis answering again; circuit closed')
        for (const wake of [...this.waiters]) wake()
      }
    } catch (err) {
      this.trip((err as Error).message)
    } finally {
      this.checking = false
    }
  }

  /** Opens the circuit; when Redis is hanging, drops the connection so nothing piles up behind it. */
  private trip (reason: string): void {
    const { redis } = this.opts
    if (this.healthyNow) {
      this.healthyNow = false
      this.opts.log.warn({ reason }, 'redis not answering; failing fast until a health check passes')
    }
    // A live socket to a Redis that does not answer: destroying it discards
    // the bytes still in our buffer (an orderly close would flush them) and
    // ioredis reconnects by itself. Scripts already on Redis's side are
    // stopped by their deadline.
    if (!this.stopped && (redis.status === 'ready' || redis.status === 'connect') && reason !== 'connection closed') {
      redis.stream?.destroy()
    }
  }

  stop (): void {
    this.stopped = true
    clearInterval(this.timer)
    for (const wake of [...this.waiters]) wake()
  }
}

/** A failure of the link itself (timeout, closed socket, expired deadline), not a reply like WRONGTYPE. */
function isLinkFailure (err: unknown): boolean {
  if (!(err instanceof Error)) return true
  if (err.name === 'ReplyError') return err.message.startsWith(EXPIRED)
  return true
}
