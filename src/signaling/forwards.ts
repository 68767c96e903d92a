import type { Clock } from './types'

/** How long an instance passes on frames for a peer that resumed elsewhere (for senders that have not heard yet). */
export const FORWARD_MS = 10_000

/**
 * Peers that resumed on another instance: for a while, frames and refusals
 * that still arrive for them here are passed on there.
 */
export class Forwards {
  private readonly to = new Map<string, { node: string, until: number }>()

  constructor (private readonly clock: Clock) {}

  set (peerId: string, node: string): void {
    this.to.set(peerId, { node, until: this.clock.now() + FORWARD_MS })
  }

  /** Where frames for a peer that moved away from here go now (undefined: nowhere). */
  forwardTo (peerId: string): string | undefined {
    const forward = this.to.get(peerId)
    return forward !== undefined && forward.until > this.clock.now() ? forward.node : undefined
  }

  /** Expired forwards go (called from the heartbeat sweep). */
  sweep (): void {
    const now = this.clock.now()
    for (const [peerId, forward] of this.to) if (forward.until <= now) this.to.delete(peerId)
  }
}
