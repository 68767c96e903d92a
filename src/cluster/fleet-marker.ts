import { Waiters } from '../waiters'

/*
 * The fleet marker (`fleet` in src/redis/keys.ts): a value written once (SET
 * NX) and read back with every heartbeat and with every lookup whose answer
 * could be "no such session". While it is the value this instance first saw,
 * a missing record means what it says (ended, never existed). Another value,
 * or none, means Redis lost its data since (a restart without persistence, a
 * failover to an empty replica, a FLUSHALL): a missing record then proves
 * nothing, and this instance rewrites what it serves (redis-mesh.ts restore)
 * before it trusts the registry again. Even then, for `doubtMs` after its own
 * rewrite (INSTANCE_DEAD_AFTER_MS: by then every live instance has heart-beaten,
 * noticed the loss and rewritten its own sessions), a missing record may be
 * one another instance has not rewritten yet, and still proves nothing.
 */
export class FleetMarker {
  private trusted: string | null = null
  private lost = false
  private doubtUntil = 0
  private readonly waiters = new Waiters()

  /** `onLost` runs once per loss, when a read first shows it. */
  constructor (private readonly onLost: () => void, private readonly doubtMs = 0, private readonly now: () => number = Date.now) {}

  /** Whether records read together with this marker value can be believed. */
  check (current: string | null): boolean {
    if (this.trusted === null) {
      // First sight (a fresh instance, or a fresh Redis before anyone wrote it): nothing to restore.
      if (current !== null) this.trusted = current
      return !this.lost
    }
    if (current === this.trusted && !this.lost) return this.now() >= this.doubtUntil
    if (!this.lost) {
      this.lost = true
      this.onLost()
    }
    return false
  }

  /** The registry was rewritten under `current`: believe it again. */
  adopt (current: string): void {
    this.trusted = current
    this.lost = false
    this.doubtUntil = this.now() + this.doubtMs
    this.waiters.wakeAll()
  }

  /** Resolves once a loss in progress is restored (at once if none), or after `ms`. */
  async settled (ms: number): Promise<void> {
    if (this.lost) await this.waiters.wait(ms)
  }

  /** Whether a loss was seen and not yet restored. */
  get restoring (): boolean {
    return this.lost
  }

  /** Milliseconds until a missing record is believed again after a restore (0: it is). */
  doubtLeft (): number {
    return this.lost ? Infinity : Math.max(0, this.doubtUntil - this.now())
  }
}
