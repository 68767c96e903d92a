/**
 * Awaits `work` (a shutdown, a drain) that waits on the fake clock: while it
 * has not finished, the clock moves forward in `stepMs` steps, at most `maxMs`.
 * Work that finishes without waiting moves no time at all.
 */
export async function whileAdvancing<T> (c: { advance (ms: number): Promise<void> }, work: Promise<T>, maxMs = 60_000, stepMs = 20): Promise<T> {
  const state = { done: false }
  const settled = work.finally(() => { state.done = true })
  for (let waited = 0; waited <= maxMs; waited += stepMs) {
    for (let i = 0; i < 5; i++) {
      if (state.done) return await settled
      await new Promise(resolve => setImmediate(resolve))
    }
    if (state.done) break
    await c.advance(stepMs)
  }
  return await settled
}
