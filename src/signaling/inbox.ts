import type { Baseline, Envelope } from './bus'
import type { TimerHandle } from './types'

/*
 * What arrives for one peer, as delivery.ts keeps it (delivery.ts is the only
 * writer): the bounded buffer of frames no socket could take yet, the gate a
 * move closes, and per sender the sequence check's state.
 */

/** Holes tracked per sender; a larger jump makes everything below it unknown (late frames delivered). */
const MAX_HOLES = 256

/** Per sender: its epoch, the next sequence expected, the floor, the holes, and the highest sequence that went out here. */
export interface Expected { epoch: number, next: number, floor: number, holes: Set<number> | null, emitted: number }

/** Records that sequences [from, to) were skipped: they may still arrive, late. */
export function skip (expected: Expected, from: number, to: number): void {
  if (to - from > MAX_HOLES) {
    expected.floor = to
    expected.holes = null
    return
  }
  expected.holes ??= new Set()
  for (let seq = from; seq < to; seq++) expected.holes.add(seq)
  if (expected.holes.size > MAX_HOLES) {
    const sorted = [...expected.holes].sort((a, b) => a - b)
    expected.floor = Math.max(expected.floor, sorted[sorted.length - MAX_HOLES] ?? expected.floor)
    expected.holes = new Set(sorted.filter(seq => seq >= expected.floor))
  }
}

export class Inbox {
  /**
   * Frames accepted while no connection could take them: held for resume, or
   * waiting for the socket to drain (a replay, a slow reader). Bounded by
   * resumeBufferMax and resumeBufferBytes.
   */
  held: Envelope[] = []
  heldBytes = 0
  pumpTimer: TimerHandle | null = null
  /** Non-null while inbound frames wait for a handover from the previous instance. */
  pending: Envelope[] | null = null
  /** Next sequence expected per sender (created on first use: an idle session carries none). */
  seqFrom: Map<string, Expected> | null = null
  /** Frames that arrived ahead of a gap, per sender, in sequence order. */
  gaps: Map<string, Envelope[]> | null = null
  gapTimer: TimerHandle | null = null
  reconcileUntil = 0

  /** The peer left its room: what it expected from each sender goes with it. */
  forgetSenders (): void {
    this.seqFrom = null
  }

  /** Where its inbound sequences stand, for a handover to another instance. */
  baseline (): Baseline {
    return [...this.seqFrom ?? []].map(([from, e]) => [from, e.epoch, e.next, e.floor, [...e.holes ?? []]])
  }
}
