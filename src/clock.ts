/*
 * Time, as a port: the signaling core and the mesh's liveness take a Clock so
 * their timing is testable without waiting. Neutral ground, so neither the
 * core nor the infrastructure imports the other for it.
 */

export type TimerHandle = ReturnType<typeof setTimeout>

export interface Clock {
  now (): number
  setTimeout (fn: () => void, ms: number): TimerHandle
  clearTimeout (timer: TimerHandle): void
}

/** The wall clock, with unref'd timers (they never keep the process alive on their own). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms)
    timer.unref()
    return timer
  },
  clearTimeout: (timer) => clearTimeout(timer)
}
