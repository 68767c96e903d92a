/*
 * Callers waiting for a condition with a bound: each wait ends when the
 * condition's owner wakes them all, or after its own time. Shared by the
 * Redis link (circuit closed again) and the fleet marker (registry rewritten).
 */
export class Waiters {
  private readonly waiting = new Set<() => void>()

  /** Resolves when `wakeAll` runs, or after `ms`. */
  async wait (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.waiting.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.waiting.add(done)
    })
  }

  wakeAll (): void {
    for (const wake of [...this.waiting]) wake()
  }
}
