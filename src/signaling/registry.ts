import { Session, type SessionEnv } from './session'
import { issueToken, newPeerId, secretMatches, splitToken } from './tokens'

/**
 * The sessions this instance serves and its members of each room (held ones
 * included). A session is found by peer id or by its resume token; binding
 * it to a room is local bookkeeping only (the store and the mesh are told by
 * the caller).
 */
export class SessionRegistry {
  private readonly sessions = new Map<string, Session>()
  private readonly rooms = new Map<string, Set<Session>>()
  /** Sessions held for resume (no connection), per client IP: they count toward its connection cap. */
  private readonly heldByIp = new Map<string, Set<Session>>()
  private heldCount = 0

  /**
   * `roomEmptied`: the last local member left a room (its routes can go);
   * `countChanged`: what counts toward an IP's connection cap here changed.
   */
  constructor (
    private readonly env: SessionEnv,
    private readonly roomEmptied: (roomId: string) => void,
    private readonly countChanged: (ip: string) => void = () => {}
  ) {}

  get size (): number {
    return this.sessions.size
  }

  get roomCount (): number {
    return this.rooms.size
  }

  /** Sessions held for resume (no connection). */
  get held (): number {
    return this.heldCount
  }

  get (peerId: string): Session | undefined {
    return this.sessions.get(peerId)
  }

  has (peerId: string): boolean {
    return this.sessions.has(peerId)
  }

  all (): Session[] {
    return [...this.sessions.values()]
  }

  /** A session for `peerId` (new, or taken over from another instance) with its secret. */
  create (peerId: string, hash: Buffer, ip: string): Session {
    const session = new Session(peerId, hash, ip, this.env)
    this.sessions.set(peerId, session)
    return session
  }

  /** A brand-new identity; recorded on the mesh by its first join (before that there is nothing to resume elsewhere). */
  fresh (ip: string): { session: Session, token: string } {
    const peerId = newPeerId()
    const issued = issueToken(peerId)
    return { session: this.create(peerId, issued.hash, ip), token: issued.token }
  }

  /** The live local session a resume token proves, if any (constant-time secret check). */
  forToken (token: string): Session | undefined {
    const parts = splitToken(token)
    if (parts === null) return undefined
    const session = this.sessions.get(parts.peerId)
    if (session === undefined || session.ended) return undefined
    return secretMatches(parts.secret, session.secretHash) ? session : undefined
  }

  /** Forgets the session (only this one: a newer session with the same id stays). */
  remove (session: Session): void {
    this.unhold(session)
    if (this.sessions.get(session.peerId) === session) this.sessions.delete(session.peerId)
  }

  /** Drops a session from this instance only, leaving its shared state alone (it lives on elsewhere). */
  letGo (session: Session): void {
    session.letGo()
    this.remove(session)
    this.unbind(session)
    // A held session that moved away no longer counts toward its IP's share here.
    this.countChanged(session.ip)
  }

  /** The session lost its connection and waits for a resume. */
  hold (session: Session): void {
    let held = this.heldByIp.get(session.ip)
    if (held === undefined) {
      held = new Set()
      this.heldByIp.set(session.ip, held)
    }
    if (held.has(session)) return
    held.add(session)
    this.heldCount++
  }

  /** It is connected again, or over. */
  unhold (session: Session): void {
    const held = this.heldByIp.get(session.ip)
    if (held?.delete(session) !== true) return
    this.heldCount--
    if (held.size === 0) this.heldByIp.delete(session.ip)
  }

  /** Sessions held for resume whose last connection came from `ip`. */
  heldFrom (ip: string): number {
    return this.heldByIp.get(ip)?.size ?? 0
  }

  /** Whether this session is held and was last connected from `ip`. */
  isHeldFrom (session: Session, ip: string): boolean {
    return this.heldByIp.get(ip)?.has(session) === true
  }

  members (roomId: string): Iterable<Session> {
    return this.rooms.get(roomId) ?? []
  }

  bind (session: Session, roomId: string): void {
    session.enterRoom(roomId)
    let local = this.rooms.get(roomId)
    if (local === undefined) {
      local = new Set()
      this.rooms.set(roomId, local)
    }
    local.add(session)
  }

  unbind (session: Session): string | null {
    const roomId = session.roomId
    if (roomId === null) return null
    const local = this.rooms.get(roomId)
    local?.delete(session)
    session.exitRoom()
    if (local === undefined || local.size === 0) {
      this.rooms.delete(roomId)
      this.roomEmptied(roomId)
    }
    return roomId
  }

  /** Rooms with members here, with those members (for TTL refresh). */
  occupied (): Array<{ roomId: string, peerIds: string[] }> {
    return [...this.rooms].map(([roomId, members]) => ({ roomId, peerIds: [...members].map(s => s.peerId) }))
  }
}
