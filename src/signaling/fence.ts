import type { Clock, Logger, TimerHandle } from './types'

/*
 * The fence: what this instance reads after it may have lost its sessions
 * waits until it knows which sessions are still its own.
 *
 * Two faults make an instance's view stale without it noticing at once:
 * - it froze (SIGSTOP, a VM pause, a swap storm) while its clients gave up
 *   and resumed elsewhere; on waking, the event loop first delivers what
 *   piled up meanwhile: client frames written before the clients left, and
 *   messages from other instances for peers that have moved on;
 * - it was cut off from Redis while the others kept it, so its clients were
 *   claimed elsewhere and the others' messages to it queued up on the far side.
 *
 * So a stall (the loop did not turn for longer than `stallMs`: noticed by the
 * watchdog timer firing late, or by any input arriving while the last turn
 * is that old) closes the fence for every input; a lost Redis link closes it
 * for messages from other instances (the clients still connected are served,
 * and the store refuses what it cannot do). Inputs that arrive while it is
 * closed are kept in arrival order. `verify` then asks the registry who owns
 * each session and lets go of the ones claimed or ended elsewhere (hub.ts);
 * only after it succeeds does the queue run, so nothing read while frozen is
 * written to a socket or relayed by an instance that no longer owns it.
 */

/** What one fenced input is: a client's (its connection) or another instance's. */
export type FenceScope = 'client' | 'bus'

export interface FencePorts {
  clock: Clock
  log: Logger
  /** A loop turn longer than this closes the fence. */
  stallMs: number
  /**
   * Settles ownership after a stall or a lost link: resolves true once done,
   * false when the registry cannot be asked yet (tried again shortly).
   */
  verify (): Promise<boolean>
  /** Whether the registry can be reached now (the command link's circuit is closed). */
  linkHealthy (): boolean
  /** Most inputs kept while closed; beyond it `overflow` answers them instead. */
  queueMax: number
  overflow (scope: FenceScope): void
}

const RETRY_MS = 250

export class Fence {
  private lastTurn: number
  private readonly queue: Array<[FenceScope, () => void]> = []
  /** Client inputs in the queue: while there are any, later ones from clients queue behind them. */
  private queuedClient = 0
  /** Closed for every input (a stall) or for other instances' messages only (a lost link). */
  private closedFor: 'all' | 'bus' | null = null
  private verifying = false
  private retry: TimerHandle | null = null
  private watchdog: TimerHandle | null = null
  private readonly tickMs: number
  /** How many times the fence closed after a stall, and after a lost link (tests, logs). */
  stalls = 0
  linkLosses = 0

  constructor (private readonly ports: FencePorts) {
    this.lastTurn = ports.clock.now()
    this.tickMs = Math.max(10, Math.floor(ports.stallMs / 4))
  }

  /** Starts the watchdog: a timer that notices when it fires late. */
  start (): void {
    const tick = (): void => {
      this.check()
      this.watchdog = this.ports.clock.setTimeout(tick, this.tickMs)
    }
    this.watchdog = this.ports.clock.setTimeout(tick, this.tickMs)
  }

  stop (): void {
    if (this.watchdog !== null) this.ports.clock.clearTimeout(this.watchdog)
    if (this.retry !== null) this.ports.clock.clearTimeout(this.retry)
    this.watchdog = null
    this.retry = null
  }

  /** Whether inputs of this scope wait (tests, metrics). */
  closed (scope: FenceScope = 'client'): boolean {
    return this.closedFor === 'all' || (this.closedFor === 'bus' && scope === 'bus')
  }

  /** Runs an input now, or keeps it for after the ownership check. */
  run (scope: FenceScope, input: () => void): void {
    if (this.admits(scope)) input()
    else this.keep(scope, input)
  }

  /**
   * Whether an input of this scope may run now (its turn for the stall check);
   * false: it goes to keep(). run() in two halves, for a caller that builds
   * the input's closure only when it has to wait (every client frame asks).
   */
  admits (scope: FenceScope): boolean {
    this.check()
    return (this.closedFor === null && this.queue.length === 0) || (this.closedFor === 'bus' && scope === 'client' && this.queuedClient === 0)
  }

  /** Keeps an input admits() refused for after the ownership check (or refuses it: the queue is full). */
  keep (scope: FenceScope, input: () => void): void {
    if (this.queue.length >= this.ports.queueMax) {
      this.ports.overflow(scope)
      return
    }
    if (scope === 'client') this.queuedClient++
    this.queue.push([scope, input])
  }

  /** The Redis link went down: other instances' messages wait from now until it is back and ownership is settled. */
  linkLost (): void {
    if (this.closedFor !== null) return
    this.linkLosses++
    this.closedFor = 'bus'
    this.ports.log.warn('redis link lost: messages from other instances wait until it is back and this instance\'s sessions are checked')
  }

  /** The Redis link is back: settle ownership, then let the waiting inputs through. */
  linkBack (): void {
    if (this.closedFor !== null) this.settle()
  }

  private check (): void {
    const now = this.ports.clock.now()
    const stalledMs = now - this.lastTurn
    this.lastTurn = now
    if (stalledMs <= this.ports.stallMs || this.closedFor === 'all') return
    this.stalls++
    this.closedFor = 'all'
    this.ports.log.warn({ stalledMs }, 'event loop stalled: checking which sessions are still this instance\'s before acting on anything read meanwhile')
    // After the current input's turn: whatever else the loop held back is queued first.
    this.ports.clock.setTimeout(() => this.settle(), 0)
  }

  private settle (): void {
    if (this.verifying || this.retry !== null) return
    if (!this.ports.linkHealthy()) {
      // Nothing to ask yet; a lost link's recovery calls linkBack().
      if (this.closedFor === 'all') this.retryLater()
      return
    }
    this.verifying = true
    this.ports.verify().then((done) => {
      this.verifying = false
      if (done) this.open()
      else this.retryLater()
    }, (err: unknown) => {
      this.verifying = false
      this.ports.log.warn({ err }, 'ownership check failed; retrying')
      this.retryLater()
    })
  }

  private retryLater (): void {
    this.retry ??= this.ports.clock.setTimeout(() => {
      this.retry = null
      this.settle()
    }, RETRY_MS)
  }

  private open (): void {
    this.closedFor = null
    // Inputs that arrive while the queue runs join its end, in order.
    while (this.queue.length > 0) {
      const [scope, input] = this.queue.shift() as [FenceScope, () => void]
      if (scope === 'client') this.queuedClient--
      try {
        input()
      } catch (err) {
        this.ports.log.error({ err, scope }, 'an input held behind the fence failed')
      }
    }
  }
}
