import type { Envelope } from './bus'
import type { TimerHandle } from './types'

/**
 * One peer served by another instance, as the router routes to it (router.ts
 * is the only writer): where it is served, what is in flight there, and the
 * frames held back while a bounce or a route change is settled.
 */
export class Remote {
  /** Publishes not yet answered. */
  inflight = 0
  /** Holding frames back (a bounce, or a route change with frames in flight). */
  blocked = false
  /** The instance that a bounce showed to be gone. */
  deadNode: string | null = null
  /** Bounced frames, in send order, then frames sent while blocked. */
  bounced: Envelope[] = []
  queued: Envelope[] = []
  /** Since when publishes to this peer reach nobody (null while they arrive). */
  lostSince: number | null = null
  resolving = false
  retry: TimerHandle | null = null
  removed = false

  constructor (readonly peerId: string, readonly roomId: string, public node: string) {}

  /** Frames held back, in send order. */
  get waiting (): number {
    return this.bounced.length + this.queued.length
  }

  /** Takes the frames held back, in send order. */
  takeWaiting (): Envelope[] {
    const waiting = [...this.bounced, ...this.queued]
    this.bounced = []
    this.queued = []
    return waiting
  }
}
