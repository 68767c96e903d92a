import { Inbox } from './inbox'
import type { Handover } from './mesh'
import { SessionLog } from './session-log'
import type { Clock, Logger, SessionConnection, TimerHandle } from './types'

/*
 * A peer's session on this instance, and the one place its lifecycle state
 * changes. Other modules ask it (`state`, `ended`, `conn`, `roomId`, `epoch`)
 * and move it through the transitions below; none writes its fields. What
 * arrives for the peer (the bounded buffer, the sequence check, the gate of a
 * move) is its Inbox, owned by delivery.ts.
 *
 *   new ──attach──▶ connected ──drop──▶ held ──attach (resume)──▶ connected
 *   connected / held / new ──end──▶ ending ──finish──▶ ended
 *   ending ──(claimed elsewhere as it ended)──▶ awaits the release ──▶ moved
 *   any but ended ──letGo (resumed or claimed elsewhere)──▶ moved
 *
 * `moved` and `ended` are final: the session is forgotten here (a moved one
 * lives on on another instance). The epoch counts the session's moves between
 * instances; it is taken from the registry's claim, never made up here.
 */

export type SessionState = 'new' | 'connected' | 'held' | 'ending' | 'ended' | 'moved'

/** What every session of an instance shares (one object, not a copy per session). */
export interface SessionEnv {
  clock: Clock
  /** The instance's logger; a session's lines carry its peer id and room. */
  log: Logger
}

/** A resumed session waiting for the previous instance's handover. */
interface HandoverWait { timer: TimerHandle, parked: Handover | null }

export class Session {
  private current: SessionState = 'new'
  private connection: SessionConnection | null = null
  private room: string | null = null
  private sessionEpoch = 0
  private inRegistry = false
  /** The grace of a held session, or the wait for a release of an ending one. */
  private timer: TimerHandle | null = null
  private handover: HandoverWait | null = null
  /** Next sequence number per target, for frames this peer sends. */
  private seqTo: Map<string, number> | null = null
  /** What arrives for the peer (delivery.ts). */
  readonly inbox = new Inbox()

  constructor (
    readonly peerId: string,
    private secret: Buffer,
    private lastIp: string,
    private readonly env: SessionEnv
  ) {}

  get state (): SessionState { return this.current }
  /** Over here: ending, ended, or moved to another instance. */
  get ended (): boolean { return this.current === 'ending' || this.current === 'ended' || this.current === 'moved' }
  /** Let go of here because it lives on elsewhere (its shared state is not this instance's to touch). */
  get moved (): boolean { return this.current === 'moved' }
  get conn (): SessionConnection | null { return this.connection }
  get roomId (): string | null { return this.room }
  get epoch (): number { return this.sessionEpoch }
  /** Whether the registry holds a record of it (written by its first join, or taken over by a claim). */
  get recorded (): boolean { return this.inRegistry }
  get secretHash (): Buffer { return this.secret }
  /** Where its last connection came from (its share of the per-IP cap). */
  get ip (): string { return this.lastIp }
  /** Whether a grace or a release wait is running. */
  get waiting (): boolean { return this.timer !== null }

  /** Its log lines carry its peer id and room (made per use: an idle session keeps no logger). */
  get log (): Logger {
    return new SessionLog(this.env.log, this)
  }

  // --- transitions ----------------------------------------------------------

  /**
   * A connection takes the session (new, or resumed): returns the connection
   * it replaces, if any; false when the session is already over.
   */
  attach (conn: SessionConnection): SessionConnection | null | false {
    if (!this.live('attach')) return false
    this.stopTimer()
    const replaced = this.connection !== null && this.connection !== conn ? this.connection : null
    this.connection = conn
    this.lastIp = conn.ip
    this.current = 'connected'
    return replaced
  }

  /** Its connection closed; false when that was not its current connection (a replaced one). */
  detach (conn: SessionConnection): boolean {
    if (this.connection !== conn) return false
    this.connection = null
    return true
  }

  /** Held for resume for `graceMs`; `expired` runs when the grace ends without a resume. */
  hold (graceMs: number, expired: () => void): void {
    if (!this.live('hold')) return
    this.stopTimer()
    this.current = 'held'
    this.timer = this.env.clock.setTimeout(() => {
      this.timer = null
      expired()
    }, graceMs)
  }

  /** Starts ending; false when it is already over (ending, ended, moved). */
  end (): boolean {
    if (this.ended) return false
    this.stopTimer()
    this.stopHandoverWait()
    this.current = 'ending'
    return true
  }

  /** An ending session found claimed elsewhere: waits `ms` for the new owner's release. */
  awaitRelease (ms: number, missed: () => void): void {
    if (this.current !== 'ending') {
      this.log.error({ state: this.current }, 'session: awaitRelease out of turn (ignored)')
      return
    }
    this.stopTimer()
    this.timer = this.env.clock.setTimeout(() => {
      this.timer = null
      missed()
    }, ms)
  }

  /** Over for good. */
  finish (): void {
    this.stopTimer()
    this.stopHandoverWait()
    this.current = 'ended'
  }

  /** Let go of: it lives on on another instance (or was ended there). */
  letGo (): void {
    this.stopTimer()
    this.stopHandoverWait()
    this.current = 'moved'
  }

  /** Its first join recorded it in the registry. */
  recordedByJoin (): void {
    this.inRegistry = true
  }

  /** Taken over from another instance: the registry's claim gave it this epoch. */
  claimed (epoch: number): void {
    this.sessionEpoch = epoch
    this.inRegistry = true
  }

  /** A new resume token's secret (the old one stops working). */
  rotate (hash: Buffer): void {
    this.secret = hash
  }

  /** Now a member of `roomId` (registry.bind keeps the room index). */
  enterRoom (roomId: string): void {
    this.room = roomId
  }

  /** No longer in a room: what it expected from each sender goes with it (its own outbound counters stay: receivers remember them). */
  exitRoom (): void {
    this.room = null
    this.inbox.forgetSenders()
  }

  /** Waits `ms` for the previous instance's handover; `timedOut` runs if it never comes. */
  awaitHandover (ms: number, parked: Handover | null, timedOut: () => void): void {
    this.stopHandoverWait()
    const timer = this.env.clock.setTimeout(() => {
      this.handover = null
      timedOut()
    }, ms)
    this.handover = { timer, parked }
  }

  /** The handover arrived: what was parked with the claim, or undefined when none was awaited (it came late). */
  handoverArrived (): { parked: Handover | null } | undefined {
    const wait = this.handover
    if (wait === null) return undefined
    this.stopHandoverWait()
    return { parked: wait.parked }
  }

  /** The next outbound sequence number towards `target`. */
  nextSeq (target: string): number {
    // Created on first use: an idle connection carries none.
    this.seqTo ??= new Map()
    const seq = (this.seqTo.get(target) ?? 0) + 1
    this.seqTo.set(target, seq)
    return seq
  }

  private stopTimer (): void {
    if (this.timer !== null) this.env.clock.clearTimeout(this.timer)
    this.timer = null
  }

  private stopHandoverWait (): void {
    if (this.handover !== null) this.env.clock.clearTimeout(this.handover.timer)
    this.handover = null
  }

  /** A transition out of a final state is a bug: it is logged and refused, never thrown into a socket's event handler. */
  private live (transition: string): boolean {
    if (!this.ended) return true
    this.log.error({ state: this.current, transition }, 'session: transition out of a final state (ignored)')
    return false
  }
}
