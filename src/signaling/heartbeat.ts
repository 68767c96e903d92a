import type { ConnectionRegistry } from './connection'
import type { Fence } from './fence'
import type { Forwards } from './forwards'
import type { Clock, TimerHandle } from './types'

/*
 * The heartbeat: every connection is pinged once per round, in slices (see
 * ConnectionRegistry), and whoever missed two pongs is terminated (its session
 * is held for resume). Each round also sweeps expired forwards.
 */

/**
 * Slices of a heartbeat round: a tick every heartbeatMs / slices, at most 100
 * per round and no closer than 10 ms apart (25 s → one tick per 250 ms).
 */
export function heartbeatSlices (heartbeatMs: number): number {
  return Math.max(1, Math.min(100, Math.floor(heartbeatMs / 10)))
}

/**
 * Runs `tick` heartbeatSlices(heartbeatMs) times per heartbeatMs, following
 * the clock rather than chaining intervals, whose delays would add up over a
 * hundred ticks per round and stretch it (and the time to notice a dead
 * connection). Ticks a stall held back run at once, at most a round's worth.
 * Returns the stop function.
 */
export function startHeartbeat (clock: Clock, heartbeatMs: number, tick: () => void): () => void {
  const sliceMs = heartbeatMs / heartbeatSlices(heartbeatMs)
  let next = clock.now() + sliceMs
  let timer: TimerHandle | null = null
  const run = (): void => {
    const now = clock.now()
    if (now - next > heartbeatMs) next = now - heartbeatMs
    while (next <= now) {
      tick()
      next += sliceMs
    }
    timer = clock.setTimeout(run, next - now)
  }
  timer = clock.setTimeout(run, sliceMs)
  return () => {
    if (timer !== null) clock.clearTimeout(timer)
    timer = null
  }
}

export interface HeartbeatPorts {
  connections: ConnectionRegistry
  /** Pongs read behind a closed fence have not been counted yet: no verdicts meanwhile. */
  fence: Fence | null
  forwards: Forwards
}

/** One slice of a round: ping its connections, terminate whoever missed two pongs. */
export function heartbeatTick ({ connections, fence, forwards }: HeartbeatPorts): void {
  if (fence?.closed('client') === true) return
  const { dead, roundStarted } = connections.sweepSlice()
  for (const conn of dead) {
    conn.session?.log.info('heartbeat: two pongs missed, terminating')
    conn.end('heartbeat')
  }
  if (roundStarted) forwards.sweep()
}
