import type { Clock } from './types'

/*
 * Some warnings happen at a rate a client controls (every relay during an
 * outage, every frame refused for a full resume buffer). One line per event
 * would let a client flood the logs, so each kind of warning is logged at most
 * once per window, with the count of the ones skipped since.
 */

export class LogLimiter {
  private readonly last = new Map<string, { at: number, skipped: number }>()

  constructor (private readonly clock: Clock, private readonly windowMs = 10_000) {}

  /**
   * Whether to log a warning of this kind now: null to skip it, otherwise how
   * many of its kind were skipped since the last one logged (for the entry).
   * Kinds are fixed strings in the code, so the map stays small.
   */
  take (kind: string): number | null {
    const now = this.clock.now()
    const entry = this.last.get(kind)
    if (entry !== undefined && now - entry.at < this.windowMs) {
      entry.skipped++
      return null
    }
    this.last.set(kind, { at: now, skipped: 0 })
    return entry?.skipped ?? 0
  }
}

export { brief } from '../brief'
