import { CloseCodes } from '../../schemas/ws'
import type { CloseReason, ServerCloseReason, SessionConnection, Transport } from './types'
import type { Session } from './session'

export { CLOSE_REASONS, type CloseReason, type ServerCloseReason } from './types'

const HOLD_AFTER: ReadonlySet<ServerCloseReason> = new Set(['shutdown', 'evicted', 'heartbeat'])
/** What a client sends when it means to go: 1000, 1001 (page gone), no status (1005). */
const CLEAN_CLIENT_CLOSE: ReadonlySet<number> = new Set([1000, 1001, 1005])
const ABUSE_WINDOW_MS = 10_000

export interface RateLimits { ratePerS: number, rateBurst: number, abuseMaxDrops: number }

/**
 * One WebSocket connection: its token bucket, its serial queue (one message
 * at a time, so a relay never overtakes the join before it) and how it ended.
 */
export class Connection implements SessionConnection {
  /** null until a resume looked up on the mesh settles which session this is. */
  session: Session | null = null
  serverClose: ServerCloseReason | null = null
  closedCode: number | null = null
  awaitingPongs = 0
  busy = false
  readonly queue: Array<{ raw: string, at: number }> = []
  private tokens: number
  private refilledAt: number
  private readonly drops: number[] = []

  constructor (readonly transport: Transport, readonly ip: string, private readonly limits: RateLimits, now: number) {
    this.tokens = limits.rateBurst
    this.refilledAt = now
  }

  /** Whether a frame sent now reaches the client. */
  get writable (): boolean {
    return this.serverClose === null && this.closedCode === null && this.transport.readyState === 1
  }

  /** Token bucket: 'ok', 'drop' (rate_limited), or 'abuse' (sustained flooding: close with 1008). */
  admit (now: number): 'ok' | 'drop' | 'abuse' {
    const elapsedS = (now - this.refilledAt) / 1000
    this.refilledAt = now
    this.tokens = Math.min(this.limits.rateBurst, this.tokens + elapsedS * this.limits.ratePerS)
    if (this.tokens >= 1) {
      this.tokens -= 1
      return 'ok'
    }
    this.drops.push(now)
    while (this.drops.length > 0 && (this.drops[0] ?? now) <= now - ABUSE_WINDOW_MS) this.drops.shift()
    return this.drops.length >= this.limits.abuseMaxDrops ? 'abuse' : 'drop'
  }

  get dropCount (): number {
    return this.drops.length
  }

  /** Ends the connection from the server side (once). */
  end (reason: ServerCloseReason): void {
    if (this.serverClose !== null) return
    this.serverClose = reason
    switch (reason) {
      case 'abuse': this.transport.close(CloseCodes.policyViolation, 'message rate far above limit'); break
      case 'replaced': this.transport.close(CloseCodes.replaced, 'replaced'); break
      case 'shutdown': this.transport.close(CloseCodes.goingAway, 'server shutting down'); break
      case 'evicted': this.transport.close(CloseCodes.serviceRestart, 'instance cut off: resume elsewhere'); break
      case 'retry': this.transport.close(CloseCodes.tryAgainLater, 'session lookup failed: resume again shortly'); break
      default: this.transport.terminate()
    }
  }

  /** After the close: why it ended (the server's reason first; otherwise what the client's close code says). */
  get closeReason (): CloseReason {
    return this.serverClose ?? (CLEAN_CLIENT_CLOSE.has(this.closedCode ?? 1006) ? 'client' : 'dropped')
  }

  /** After the close: whether the peer's session is held for resume (a drop) or over (a clean close, a kick). */
  get holdsSession (): boolean {
    const reason = this.serverClose
    if (reason === null) return !CLEAN_CLIENT_CLOSE.has(this.closedCode ?? 1006)
    return HOLD_AFTER.has(reason)
  }
}

/**
 * The open connections of this instance, per client IP, and the heartbeat
 * sweep over them. The sweep runs in slices: every connection belongs to one
 * of `slices` groups (round robin) and a tick pings one group, so a round
 * pings everyone once without a burst of pings (and of pongs coming back)
 * that would stall relays for all of them at once.
 */
export class ConnectionRegistry {
  private readonly open = new Set<Connection>()
  private readonly perIp = new Map<string, number>()
  private readonly groups: Array<Set<Connection>>
  private readonly groupOf = new WeakMap<Connection, Set<Connection>>()
  private nextGroup = 0
  private cursor = 0

  constructor (slices = 1) {
    this.groups = Array.from({ length: Math.max(1, slices) }, () => new Set<Connection>())
  }

  /** Ticks in one heartbeat round. */
  get slices (): number {
    return this.groups.length
  }

  get size (): number {
    return this.open.size
  }

  add (conn: Connection): void {
    this.open.add(conn)
    this.perIp.set(conn.ip, (this.perIp.get(conn.ip) ?? 0) + 1)
    const group = this.groups[this.nextGroup] as Set<Connection>
    this.nextGroup = (this.nextGroup + 1) % this.groups.length
    group.add(conn)
    this.groupOf.set(conn, group)
  }

  remove (conn: Connection): void {
    if (!this.open.delete(conn)) return
    this.groupOf.get(conn)?.delete(conn)
    const count = (this.perIp.get(conn.ip) ?? 1) - 1
    if (count <= 0) this.perIp.delete(conn.ip)
    else this.perIp.set(conn.ip, count)
  }

  from (ip: string): number {
    return this.perIp.get(ip) ?? 0
  }

  /** The next slice of a heartbeat round: ping its connections, hand back whoever missed two pongs. */
  sweepSlice (): { dead: Connection[], roundStarted: boolean } {
    const roundStarted = this.cursor === 0
    const group = this.groups[this.cursor] as Set<Connection>
    this.cursor = (this.cursor + 1) % this.groups.length
    const dead: Connection[] = []
    for (const conn of group) {
      if (conn.serverClose !== null || conn.session === null) continue
      if (conn.awaitingPongs >= 2) {
        dead.push(conn)
        continue
      }
      conn.awaitingPongs++
      conn.transport.ping()
    }
    return { dead, roundStarted }
  }

  [Symbol.iterator] (): IterableIterator<Connection> {
    return this.open.values()
  }
}
