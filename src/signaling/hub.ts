import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { LogFn } from 'pino'
import type { Member, Store } from '../store/types'
import type { IceServer } from '../../schemas/rest'
import {
  CloseCodes, PROTOCOL_VERSION,
  type ClientData, type ErrorCode, type ServerData, type ServerMessageType
} from '../../schemas/ws'
import { errorText, frame, parseFrame, type InboundMessage } from './protocol'
import { decodeBus, encodeBus, type BusMessage } from './bus'

/*
 * The signaling protocol of docs/protocol.md §3 for the connections this
 * process holds. Fastify-free: the /ws route hands each socket in as a
 * Transport and forwards its events.
 *
 * This instance is authoritative for its own peers' rooms: a relay checks the
 * sender's room here and the target's room on the target's instance, in
 * memory, and never asks the store. For rooms with members here, the hub also
 * knows which instance holds every other member (`routes`), learned from the
 * store at join time and kept current by membership messages between
 * instances, so a relay to another instance is a single publish.
 */

/** The slice of a pino logger the hub uses (Fastify's logger fits). */
export interface Logger {
  child (bindings: Record<string, unknown>): Logger
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
}

/** What the hub needs from a socket. */
export interface Transport {
  send (data: string): void
  close (code: number, reason: string): void
  terminate (): void
  ping (): void
  readonly bufferedAmount: number
}

/** Cross-instance services (Redis mode); absent on a single in-memory instance. */
export interface ClusterLink {
  /** Whether this instance currently receives what the others publish to it. */
  readonly subscribed: boolean
  publish (instance: string, payload: string): Promise<void>
  readSession (peerId: string): Promise<{ secret: string, room: string, instance: string } | null>
  claimSession (peerId: string, expectedHash: string, newHash: string): Promise<{ previousInstance: string, roomId: string | null, members: Member[] } | null>
  rotateSecret (peerId: string, newHash: string): Promise<void>
  /** Ends the session's record and its room membership in one step; false when there was none. */
  endSession (peerId: string): Promise<boolean>
}

export interface HubLimits {
  maxPeers: number
  joinRateLimit: boolean
  ratePerS: number
  rateBurst: number
  abuseMaxDrops: number
  maxBufferedBytes: number
  heartbeatMs: number
  resumeGraceMs: number
  resumeBufferMax: number
}

export interface SignalingMetrics {
  messageIn (type: string): void
  messageOut (type: string): void
  error (code: ErrorCode): void
  relayLatency (seconds: number): void
  resume (): void
}

export interface HubOptions {
  store: Store
  instanceId: string
  cluster?: ClusterLink
  log: Logger
  limits: HubLimits
  iceServers: (peerId: string) => IceServer[]
  metrics: SignalingMetrics
}

/** Events of one socket, forwarded by the transport owner. */
export interface ConnectionHandle {
  message (data: Buffer | string, isBinary: boolean): void
  pong (): void
  /** The socket closed; `code` is what the peer sent (1005 none, 1006 no close frame). */
  closed (code: number): void
  /** The WebSocket layer rejected a frame (oversize, invalid UTF-8) and is closing the socket. */
  protocolError (): void
}

/** Why the server itself ended a connection; decides whether the peer is held for resume. */
type ServerCloseReason = 'shutdown' | 'heartbeat' | 'slow' | 'replaced' | 'abuse' | 'oversize'
const HOLD_AFTER: ReadonlySet<ServerCloseReason> = new Set(['shutdown', 'heartbeat', 'slow'])
const CLEAN_CLIENT_CLOSE: ReadonlySet<number> = new Set([1000, 1001, 1005])
const ABUSE_WINDOW_MS = 10_000

interface Session {
  readonly peerId: string
  /** SHA-256 of the resume secret; the secret itself is only ever sent in `welcome`. */
  secretHash: Buffer
  roomId: string | null
  ip: string
  conn: Connection | null
  /** Frames for this peer while it is held (connection dropped, inside the grace). */
  held: string[]
  graceTimer: NodeJS.Timeout | null
  ended: boolean
  /** Ended here because it resumed on another instance (its room membership lives on). */
  moved: boolean
  log: Logger
}

interface Connection {
  /** null until a resume looked up in the cluster settles which session this is. */
  session: Session | null
  readonly transport: Transport
  readonly ip: string
  tokens: number
  refilledAt: number
  drops: number[]
  awaitingPongs: number
  serverClose: ServerCloseReason | null
  closedCode: number | null
  busy: boolean
  queue: Array<{ raw: string, at: number }>
}

export type LeaveWithTokenResult = 'left' | 'not_in_room' | 'forbidden'

const JOIN_OK = 'Successfully joined room'

const sha256 = (secret: string): Buffer => createHash('sha256').update(secret).digest()

/** `<peerId>.<secret>` split; the peer part finds the session, the secret proves it. */
function splitToken (token: string): { peerId: string, secret: string } | null {
  const dot = token.indexOf('.')
  if (dot <= 0 || dot === token.length - 1 || token.length > 256) return null
  return { peerId: token.slice(0, dot), secret: token.slice(dot + 1) }
}

export function createSignalingHub (opts: HubOptions) {
  const { store, limits, metrics, cluster, instanceId: self } = opts
  const sessions = new Map<string, Session>()
  /** roomId → this instance's members of it (held ones included). */
  const rooms = new Map<string, Set<Session>>()
  /** roomId → peerId → instance, for the rooms this instance has members in. */
  const routes = new Map<string, Map<string, string>>()
  /** Peers that resumed elsewhere: late relays for them are passed on for a while. */
  const forwards = new Map<string, { instance: string, until: number }>()
  const connections = new Set<Connection>()
  const connectionsPerIp = new Map<string, number>()
  let shuttingDown = false

  // --- identity -----------------------------------------------------------

  /** A fresh resume secret: the token goes to the client, only the hash is kept. */
  function issueSecret (session: Session): string {
    const secret = randomBytes(32).toString('base64url')
    session.secretHash = sha256(secret)
    return `${session.peerId}.${secret}`
  }

  function sessionForToken (token: string): Session | undefined {
    const parts = splitToken(token)
    if (parts === null) return undefined
    const session = sessions.get(parts.peerId)
    if (session === undefined || session.ended) return undefined
    return timingSafeEqual(sha256(parts.secret), session.secretHash) ? session : undefined
  }

  function newSession (ip: string, peerId = randomBytes(16).toString('base64url')): Session {
    const session: Session = {
      peerId, secretHash: Buffer.alloc(32), roomId: null, ip, conn: null, held: [], graceTimer: null, ended: false, moved: false, log: opts.log.child({ peerId })
    }
    sessions.set(peerId, session)
    return session
  }

  // --- sending ------------------------------------------------------------

  function sendRaw (session: Session, data: string, type: string): void {
    const conn = session.conn
    if (conn === null) {
      if (limits.resumeBufferMax === 0) return
      session.held.push(data)
      if (session.held.length > limits.resumeBufferMax) {
        session.held.shift()
        session.log.warn({ limit: limits.resumeBufferMax }, 'resume buffer full, dropped the oldest message')
      }
      return
    }
    if (conn.transport.bufferedAmount > limits.maxBufferedBytes) {
      // A reader this slow would make us hold its backlog in memory; cut it loose (it may resume).
      endConnection(conn, 'slow')
      session.held.push(data)
      return
    }
    conn.transport.send(data)
    metrics.messageOut(type)
  }

  function send<T extends ServerMessageType> (session: Session, type: T, data: ServerData<T>, id?: string): void {
    sendRaw(session, frame(type, data, id), type)
  }

  function sendError (session: Session, code: ErrorCode, extra: { type?: string, id?: string, message?: string } = {}): void {
    metrics.error(code)
    const data: ServerData<'error'> = { code, message: extra.message ?? errorText(code) }
    if (extra.type !== undefined) data.type = extra.type
    send(session, 'error', data, extra.id)
  }

  // --- other instances ------------------------------------------------------

  function publish (instance: string, msg: BusMessage): Promise<void> {
    if (cluster === undefined) return Promise.resolve()
    return cluster.publish(instance, encodeBus(msg))
  }

  /** Publishes to each instance, logging (not throwing) failures: used where no one waits for an answer. */
  function publishAll (instances: Iterable<string>, msg: BusMessage): void {
    for (const instance of instances) {
      publish(instance, msg).catch((err: unknown) => {
        opts.log.warn({ err, instance, kind: msg.kind }, 'could not reach another instance')
      })
    }
  }

  /** The other instances holding members of a room this instance has members in. */
  function remoteInstances (roomId: string): Set<string> {
    const out = new Set<string>()
    const route = routes.get(roomId)
    if (route !== undefined) for (const instance of route.values()) if (instance !== self) out.add(instance)
    return out
  }

  /** Sends one frame to every other member of a room, here and on other instances. */
  function broadcast<T extends ServerMessageType> (roomId: string, except: Session, type: T, data: ServerData<T>): void {
    const text = frame(type, data)
    deliverToRoom(roomId, except.peerId, type, text)
    if (cluster !== undefined) publishAll(remoteInstances(roomId), { kind: 'B', origin: self, roomId, except: except.peerId, type, frame: text })
  }

  function deliverToRoom (roomId: string, exceptPeerId: string, type: string, text: string): void {
    const members = rooms.get(roomId)
    if (members === undefined) return
    for (const member of members) if (member.peerId !== exceptPeerId) sendRaw(member, text, type)
  }

  // --- membership ---------------------------------------------------------

  function bindRoom (session: Session, roomId: string, members: Member[]): void {
    session.roomId = roomId
    let local = rooms.get(roomId)
    if (local === undefined) {
      local = new Set()
      rooms.set(roomId, local)
    }
    local.add(session)
    // The store's answer is the current truth for the whole room.
    const route = new Map(members.map(m => [m.peerId, m.instance]))
    route.set(session.peerId, self)
    for (const member of local) route.set(member.peerId, self)
    routes.set(roomId, route)
    session.log = opts.log.child({ peerId: session.peerId, roomId })
  }

  function unbindRoom (session: Session): string | null {
    const roomId = session.roomId
    if (roomId === null) return null
    const local = rooms.get(roomId)
    local?.delete(session)
    if (local === undefined || local.size === 0) {
      rooms.delete(roomId)
      routes.delete(roomId)
    } else {
      routes.get(roomId)?.delete(session.peerId)
    }
    session.roomId = null
    session.log = opts.log.child({ peerId: session.peerId })
    return roomId
  }

  /**
   * Leaves the room now: the others hear of it at once, the store follows
   * (unless `storeDone`: the cluster already removed the membership).
   */
  async function leaveRoom (session: Session, storeDone = false): Promise<void> {
    const remotes = session.roomId === null ? new Set<string>() : remoteInstances(session.roomId)
    const roomId = unbindRoom(session)
    if (roomId === null) return
    const text = frame('peer-disconnected', { peerId: session.peerId })
    deliverToRoom(roomId, session.peerId, 'peer-disconnected', text)
    publishAll(remotes, { kind: 'M', origin: self, roomId, peerId: session.peerId, instance: '' })
    publishAll(remotes, { kind: 'B', origin: self, roomId, except: session.peerId, type: 'peer-disconnected', frame: text })
    session.log.info({ roomId }, 'left room')
    if (!storeDone) await store.leaveRoom(roomId, session.peerId)
  }

  /** The session is over for good (clean close, grace expired, kicked). */
  function endSession (session: Session): void {
    if (session.ended) return
    session.ended = true
    if (session.graceTimer !== null) clearTimeout(session.graceTimer)
    session.graceTimer = null
    sessions.delete(session.peerId)
    session.held = []
    // The shared record goes first (one Redis round trip that also removes
    // the membership), so once the room hears of the departure the token can
    // no longer resume anywhere.
    const forgotten = cluster === undefined ? Promise.resolve(false) : cluster.endSession(session.peerId)
    forgotten
      .catch((err: unknown) => {
        session.log.warn({ err }, 'could not end the session in the store; it expires with its TTL')
        return false
      })
      .then((removed) => leaveRoom(session, removed))
      .catch((err: unknown) => {
        session.log.warn({ err }, 'could not remove a departed peer from the store; its entries expire with their TTL')
      })
  }

  /** The connection dropped without a clean close: keep the identity and room for the grace. */
  function holdSession (session: Session): void {
    if (shuttingDown && cluster !== undefined) {
      // Its record stays in Redis: the peer resumes on another instance, or a
      // survivor ends the session after the grace (see redis-cluster.ts).
      forget(session)
      return
    }
    if (limits.resumeGraceMs === 0 || shuttingDown) {
      endSession(session)
      return
    }
    session.log.info({ graceMs: limits.resumeGraceMs }, 'connection dropped, holding session for resume')
    session.graceTimer = setTimeout(() => {
      session.log.info('resume grace expired')
      endSession(session)
    }, limits.resumeGraceMs)
    session.graceTimer.unref()
  }

  /** Drops a session from this instance only, leaving its shared state alone. */
  function forget (session: Session): void {
    session.ended = true
    session.moved = true
    if (session.graceTimer !== null) clearTimeout(session.graceTimer)
    session.graceTimer = null
    sessions.delete(session.peerId)
    const roomId = session.roomId
    const local = roomId === null ? undefined : rooms.get(roomId)
    if (roomId !== null && local !== undefined) {
      local.delete(session)
      if (local.size === 0) {
        rooms.delete(roomId)
        routes.delete(roomId)
      }
    }
  }

  // --- connections --------------------------------------------------------

  function endConnection (conn: Connection, reason: ServerCloseReason): void {
    if (conn.serverClose !== null) return
    conn.serverClose = reason
    switch (reason) {
      case 'abuse': conn.transport.close(CloseCodes.policyViolation, 'message rate far above limit'); break
      case 'replaced': conn.transport.close(CloseCodes.replaced, 'replaced'); break
      case 'shutdown': conn.transport.close(CloseCodes.goingAway, 'server shutting down'); break
      default: conn.transport.terminate()
    }
  }

  function detach (conn: Connection): void {
    if (!connections.delete(conn)) return
    const count = (connectionsPerIp.get(conn.ip) ?? 1) - 1
    if (count <= 0) connectionsPerIp.delete(conn.ip)
    else connectionsPerIp.set(conn.ip, count)
  }

  function onClosed (conn: Connection, code: number): void {
    detach(conn)
    conn.closedCode = code
    const session = conn.session
    if (session === null) return // still resolving a resume: attach() sees closedCode
    if (session.conn !== conn) return // replaced by a resumed connection: nothing to do
    session.conn = null
    const reason = conn.serverClose
    const clientClosedCleanly = reason === null && CLEAN_CLIENT_CLOSE.has(code)
    if (clientClosedCleanly || (reason !== null && !HOLD_AFTER.has(reason))) {
      session.log.info({ code, reason }, 'connection closed')
      endSession(session)
    } else {
      holdSession(session)
    }
  }

  /** Token bucket per connection; sustained overflow ends the connection with 1008. */
  function admit (conn: Connection, now: number): boolean {
    const elapsedS = (now - conn.refilledAt) / 1000
    conn.refilledAt = now
    conn.tokens = Math.min(limits.rateBurst, conn.tokens + elapsedS * limits.ratePerS)
    if (conn.tokens >= 1) {
      conn.tokens -= 1
      return true
    }
    conn.drops.push(now)
    while (conn.drops.length > 0 && (conn.drops[0] ?? now) <= now - ABUSE_WINDOW_MS) conn.drops.shift()
    if (conn.drops.length >= limits.abuseMaxDrops) {
      opts.log.warn({ peerId: conn.session?.peerId, drops: conn.drops.length }, 'closing connection for sustained message flooding')
      endConnection(conn, 'abuse')
    }
    return false
  }

  function onMessage (conn: Connection, data: Buffer | string, isBinary: boolean): void {
    if (conn.serverClose !== null) return
    const now = performance.now()
    const session = conn.session
    if (!admit(conn, now)) {
      // Nothing may precede welcome: while a resume is pending, excess frames just drop.
      if (conn.serverClose === null && session !== null) sendError(session, 'rate_limited', { message: 'Message rate limit exceeded; message dropped' })
      return
    }
    if (isBinary) {
      if (session !== null) sendError(session, 'bad_json', { message: 'Binary frames are not accepted' })
      return
    }
    const raw = typeof data === 'string' ? data : data.toString('utf8')
    // One message at a time per connection, so a relay never overtakes the join before it.
    if (conn.busy) conn.queue.push({ raw, at: now })
    else run(conn, raw, now)
  }

  function run (conn: Connection, raw: string, at: number): void {
    const session = conn.session
    if (session === null) return
    let pending: Promise<void> | undefined
    try {
      pending = dispatch(session, raw, at)
    } catch (err) {
      internalError(session, err)
    }
    if (pending === undefined) return
    conn.busy = true
    pending.catch((err: unknown) => internalError(session, err)).finally(() => {
      conn.busy = false
      drain(conn)
    })
  }

  function drain (conn: Connection): void {
    while (!conn.busy && conn.queue.length > 0) {
      const next = conn.queue.shift()
      if (next !== undefined) run(conn, next.raw, next.at)
    }
  }

  function internalError (session: Session, err: unknown): void {
    session.log.error({ err }, 'message handler failed')
    if (!session.ended) sendError(session, 'unavailable')
  }

  // --- message handlers -----------------------------------------------------

  /** Returns a promise only for handlers that wait on the store. */
  function dispatch (session: Session, raw: string, at: number): Promise<void> | undefined {
    const msg = parseFrame(raw)
    if (!msg.ok) {
      metrics.messageIn('invalid')
      sendError(session, msg.code, { message: msg.message, type: msg.type, id: msg.id })
      return undefined
    }
    metrics.messageIn(msg.type)
    return handle(session, msg, at)
  }

  function handle (session: Session, msg: InboundMessage, at: number): Promise<void> | undefined {
    switch (msg.type) {
      case 'join': return join(session, msg.data, msg.id)
      case 'leave': return leave(session, msg.data, msg.id)
      case 'offer':
        relay(session, msg.data.peerId, 'offer', { offer: { type: msg.data.offer.type, sdp: msg.data.offer.sdp }, peerId: session.peerId, from: session.peerId }, msg.id, at)
        return undefined
      case 'answer':
        relay(session, msg.data.peerId, 'answer', { answer: { type: msg.data.answer.type, sdp: msg.data.answer.sdp }, peerId: session.peerId, from: session.peerId }, msg.id, at)
        return undefined
      case 'ice-candidate': {
        const c = msg.data.candidate
        const candidate = c === null
          ? null
          : { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment }
        relay(session, msg.data.peerId, 'ice-candidate', { candidate, peerId: session.peerId, from: session.peerId }, msg.id, at)
        return undefined
      }
      case 'initiator-online':
        if (session.roomId !== msg.data.roomId) sendError(session, 'not_in_room', { type: msg.type, id: msg.id })
        else broadcast(session.roomId, session, 'initiator-online', { roomId: session.roomId })
        return undefined
      case 'recipient-ready': {
        const claimed = msg.data.roomId
        const inRoom = session.roomId !== null && (claimed === undefined || claimed === null || claimed === session.roomId)
        if (!inRoom || session.roomId === null) sendError(session, 'not_in_room', { type: msg.type, id: msg.id })
        else broadcast(session.roomId, session, 'recipient-ready', { peerId: session.peerId })
        return undefined
      }
      case 'ping':
        send(session, 'pong', {}, msg.id)
        return undefined
    }
  }

  /**
   * §3.3: delivered only when sender and target are in the same room right
   * now. Here: the sender's room is checked; a local target's room too. For a
   * target on another instance, that instance checks the target's room
   * against the room stamped here, and answers a refusal with an F message.
   */
  function relay<T extends 'offer' | 'answer' | 'ice-candidate'> (
    sender: Session, targetId: string, type: T, data: ServerData<T>, id: string | undefined, at: number
  ): void {
    const roomId = sender.roomId
    const target = sessions.get(targetId)
    if (roomId !== null && target !== undefined && target !== sender && target.roomId === roomId) {
      send(target, type, data)
      metrics.relayLatency((performance.now() - at) / 1000)
      return
    }
    const instance = roomId === null || target !== undefined ? undefined : routes.get(roomId)?.get(targetId)
    if (roomId === null || instance === undefined || instance === self) {
      sendError(sender, 'peer_not_found', { type, id })
      return
    }
    publish(instance, { kind: 'R', origin: self, to: targetId, roomId, from: sender.peerId, type, id: id ?? '', frame: frame(type, data) })
      .catch(() => sendError(sender, 'unavailable', { type, id }))
    metrics.relayLatency((performance.now() - at) / 1000)
  }

  async function join (session: Session, data: ClientData<'join'>, id: string | undefined): Promise<void> {
    const { roomId } = data
    const reply = (extra: Omit<ServerData<'joinResponse'>, 'roomId'>) => {
      if (!extra.success && extra.code !== undefined) metrics.error(extra.code)
      send(session, 'joinResponse', { ...extra, roomId }, id)
    }
    if (session.roomId !== null && session.roomId !== roomId) {
      reply({ success: false, code: 'already_in_room', message: errorText('already_in_room') })
      return
    }
    const rejoin = session.roomId === roomId
    try {
      // A same-room rejoin (re-negotiation after a P2P drop) is never rate limited.
      if (!rejoin && limits.joinRateLimit) {
        const rate = await store.hitJoinRateLimit(session.ip)
        if (!rate.allowed) {
          reply({ success: false, code: 'rate_limited', message: `Rate limit exceeded. Try again in ${rate.retryAfterS}s. Attempts left: ${rate.remaining}.` })
          return
        }
      }
      const result = await store.joinRoom(roomId, session.peerId, limits.maxPeers, cluster === undefined ? undefined : session.secretHash.toString('hex'))
      if (session.ended) {
        // The peer went away while the store answered: undo, nobody was told.
        if (!session.moved) await store.leaveRoom(roomId, session.peerId)
        return
      }
      if (!result.ok) {
        reply({ success: false, code: result.code, message: errorText(result.code) })
        return
      }
      bindRoom(session, roomId, result.members)
      session.log.info({ rejoin }, 'joined room')
      reply({ success: true, message: JOIN_OK, peerId: session.peerId, peers: result.members.map(m => m.peerId).filter(p => p !== session.peerId) })
      if (!rejoin) publishAll(remoteInstances(roomId), { kind: 'M', origin: self, roomId, peerId: session.peerId, instance: self })
      broadcast(roomId, session, 'ready', { peerId: session.peerId })
    } catch (err) {
      session.log.warn({ err }, 'join failed: store unavailable')
      reply({ success: false, code: 'unavailable', message: errorText('unavailable') })
    }
  }

  async function leave (session: Session, data: ClientData<'leave'>, id: string | undefined): Promise<void> {
    if (session.roomId !== data.roomId) {
      metrics.error('not_in_room')
      send(session, 'leaveResponse', { success: false, roomId: data.roomId, code: 'not_in_room' }, id)
      return
    }
    try {
      await leaveRoom(session)
    } catch (err) {
      // Locally the peer has left (others were told); the store entry expires with the room.
      session.log.warn({ err }, 'leave: store unavailable')
    }
    send(session, 'leaveResponse', { success: true, roomId: data.roomId }, id)
  }

  // --- messages from other instances ------------------------------------------

  function onBus (payload: string): void {
    const msg = decodeBus(payload)
    if (msg === null) {
      opts.log.warn('dropped a malformed message from another instance')
      return
    }
    if (msg.origin === self) return // never act on our own echo
    switch (msg.kind) {
      case 'R': {
        const target = sessions.get(msg.to)
        if (target !== undefined && target.roomId === msg.roomId) {
          sendRaw(target, msg.frame, msg.type)
          return
        }
        const forward = forwards.get(msg.to)
        if (target === undefined && forward !== undefined) {
          publishAll([forward.instance], msg)
          return
        }
        publishAll([msg.origin], { kind: 'F', origin: self, to: msg.from, type: msg.type, id: msg.id })
        return
      }
      case 'F': {
        const sender = sessions.get(msg.to)
        if (sender !== undefined) sendError(sender, 'peer_not_found', { type: msg.type, id: msg.id === '' ? undefined : msg.id })
        return
      }
      case 'B':
        deliverToRoom(msg.roomId, msg.except, msg.type, msg.frame)
        return
      case 'M': {
        const route = routes.get(msg.roomId)
        if (route === undefined) return
        if (msg.instance === '') route.delete(msg.peerId)
        else route.set(msg.peerId, msg.instance)
        return
      }
      case 'T':
        release(msg.peerId, msg.origin)
        return
      case 'H': {
        const session = sessions.get(msg.peerId)
        if (session !== undefined) for (const text of msg.frames) sendRaw(session, text, 'handover')
        return
      }
      case 'L': {
        const session = sessions.get(msg.peerId)
        if (session !== undefined && session.roomId === msg.roomId) {
          leaveRoom(session).catch((err: unknown) => session.log.warn({ err }, 'leave on request: store unavailable'))
        }
      }
    }
  }

  /** The peer resumed on `instance`: hand over what was held for it and stop serving it here. */
  function release (peerId: string, instance: string): void {
    const session = sessions.get(peerId)
    if (session === undefined) return
    session.log.info({ to: instance }, 'session resumed on another instance')
    const held = session.held
    const roomId = session.roomId
    forget(session)
    if (roomId !== null) routes.get(roomId)?.set(peerId, instance)
    forwards.set(peerId, { instance, until: Date.now() + Math.max(limits.resumeGraceMs, 5000) })
    if (held.length > 0) publishAll([instance], { kind: 'H', origin: self, peerId, frames: held })
    if (session.conn !== null) endConnection(session.conn, 'replaced')
  }

  /** A token this instance does not hold: ask the cluster, and take the session over if it is genuine. */
  async function resumeFromCluster (token: string, ip: string): Promise<{ session: Session, token: string } | null> {
    const parts = splitToken(token)
    if (cluster === undefined || parts === null || sessions.has(parts.peerId)) return null
    const record = await cluster.readSession(parts.peerId)
    if (record === null) return null
    const stored = Buffer.from(record.secret, 'hex')
    const given = sha256(parts.secret)
    if (stored.length !== given.length || !timingSafeEqual(stored, given)) return null

    const session = newSession(ip, parts.peerId)
    const newToken = issueSecret(session)
    const claimed = await cluster.claimSession(parts.peerId, record.secret, session.secretHash.toString('hex'))
    if (claimed === null) {
      sessions.delete(parts.peerId)
      return null
    }
    if (claimed.roomId !== null) {
      bindRoom(session, claimed.roomId, claimed.members)
      publishAll(remoteInstances(claimed.roomId), { kind: 'M', origin: self, roomId: claimed.roomId, peerId: session.peerId, instance: self })
    }
    if (claimed.previousInstance !== self) publishAll([claimed.previousInstance], { kind: 'T', origin: self, peerId: session.peerId })
    return { session, token: newToken }
  }

  /** Binds a connection to its session and greets it: welcome first, then anything held. */
  function attach (conn: Connection, session: Session, token: string, resumed: boolean): void {
    conn.session = session
    if (conn.closedCode !== null) {
      // The socket went away while the resume was looked up.
      if (resumed) holdSession(session)
      else endSession(session)
      return
    }
    if (session.graceTimer !== null) clearTimeout(session.graceTimer)
    session.graceTimer = null
    // A half-open old connection is taken over.
    if (session.conn !== null && session.conn !== conn) endConnection(session.conn, 'replaced')
    session.ip = conn.ip
    session.conn = conn
    send(session, 'welcome', {
      peerId: session.peerId,
      protocol: PROTOCOL_VERSION,
      heartbeatMs: limits.heartbeatMs,
      resumeToken: token,
      iceServers: opts.iceServers(session.peerId)
    })
    if (resumed) {
      metrics.resume()
      const held = session.held
      session.held = []
      session.log.info({ delivered: held.length }, 'session resumed')
      for (const text of held) sendRaw(session, text, 'resumed')
    } else {
      session.log.debug('connected')
    }
  }

  function fresh (ip: string): { session: Session, token: string } {
    const session = newSession(ip)
    // Recorded in Redis by the first join: before that there is nothing to resume elsewhere.
    return { session, token: issueSecret(session) }
  }

  // --- public API -----------------------------------------------------------

  return {
    /** Open WebSocket connections from this IP (checked before an upgrade). */
    connectionsFrom (ip: string): number {
      return connectionsPerIp.get(ip) ?? 0
    },

    /** Attaches a freshly upgraded socket: resumes the session its token names, or starts a new one. */
    open (transport: Transport, ctx: { ip: string, resumeToken?: string }): ConnectionHandle {
      const conn: Connection = {
        session: null,
        transport,
        ip: ctx.ip,
        tokens: limits.rateBurst,
        refilledAt: performance.now(),
        drops: [],
        awaitingPongs: 0,
        serverClose: null,
        closedCode: null,
        busy: false,
        queue: []
      }
      connections.add(conn)
      connectionsPerIp.set(ctx.ip, (connectionsPerIp.get(ctx.ip) ?? 0) + 1)

      const token = ctx.resumeToken
      const local = token === undefined ? undefined : sessionForToken(token)
      if (local !== undefined) {
        const rotated = issueSecret(local)
        if (local.roomId !== null) {
          cluster?.rotateSecret(local.peerId, local.secretHash.toString('hex')).catch((err: unknown) => {
            local.log.warn({ err }, 'rotated token not recorded in the store')
          })
        }
        attach(conn, local, rotated, true)
      } else if (token !== undefined && cluster !== undefined && splitToken(token) !== null) {
        // The session may live on another instance: frames wait until it is settled.
        conn.busy = true
        resumeFromCluster(token, ctx.ip)
          .catch((err: unknown) => {
            opts.log.warn({ err }, 'resume lookup failed; starting a new session')
            return null
          })
          .then((found) => {
            if (found !== null) attach(conn, found.session, found.token, true)
            else {
              const created = fresh(ctx.ip)
              attach(conn, created.session, created.token, false)
            }
            conn.busy = false
            drain(conn)
          })
          .catch((err: unknown) => opts.log.error({ err }, 'attaching a connection failed'))
      } else {
        const created = fresh(ctx.ip)
        attach(conn, created.session, created.token, false)
      }

      return {
        message: (data, isBinary) => onMessage(conn, data, isBinary),
        pong: () => { conn.awaitingPongs = 0 },
        closed: (code) => onClosed(conn, code),
        protocolError: () => {
          // ws already sent the close frame (1009 or 1007); the peer is not held for resume.
          if (conn.serverClose === null) conn.serverClose = 'oversize'
        }
      }
    },

    /** A message published to this instance by another one. */
    onBus,

    /** False while, in Redis mode, this instance cannot hear the other instances. */
    reachable (): boolean {
      return cluster?.subscribed ?? true
    },

    /**
     * Sessions of a dead instance were ended (by this instance, after the
     * grace): tell their rooms, here and on every instance still in them.
     */
    peersGone (ended: Array<{ peerId: string, roomId: string, remaining: Member[] }>): void {
      for (const { peerId, roomId, remaining } of ended) {
        const text = frame('peer-disconnected', { peerId })
        routes.get(roomId)?.delete(peerId)
        deliverToRoom(roomId, peerId, 'peer-disconnected', text)
        const others = new Set(remaining.map(m => m.instance).filter(i => i !== self))
        publishAll(others, { kind: 'M', origin: self, roomId, peerId, instance: '' })
        publishAll(others, { kind: 'B', origin: self, roomId, except: peerId, type: 'peer-disconnected', frame: text })
      }
    },

    /** POST /api/leave_room: leave on behalf of a session that proves itself with its token. */
    async leaveWithToken (roomId: string, peerId: string, token: string): Promise<LeaveWithTokenResult> {
      const parts = splitToken(token)
      if (parts === null || parts.peerId !== peerId) return 'forbidden'
      const session = sessionForToken(token)
      if (session !== undefined) {
        if (session.roomId !== roomId) return 'not_in_room'
        await leaveRoom(session)
        return 'left'
      }
      if (cluster === undefined || sessions.has(peerId)) return 'forbidden'
      const record = await cluster.readSession(peerId)
      const stored = record === null ? Buffer.alloc(0) : Buffer.from(record.secret, 'hex')
      const given = sha256(parts.secret)
      if (record === null || stored.length !== given.length || !timingSafeEqual(stored, given)) return 'forbidden'
      if (record.room !== roomId) return 'not_in_room'
      await publish(record.instance, { kind: 'L', origin: self, peerId, roomId })
      return 'left'
    },

    /** One heartbeat round: ping everyone, terminate whoever missed two pongs. */
    heartbeat (): void {
      for (const conn of connections) {
        if (conn.serverClose !== null || conn.session === null) continue
        if (conn.awaitingPongs >= 2) {
          conn.session.log.info('heartbeat: two pongs missed, terminating')
          endConnection(conn, 'heartbeat')
          continue
        }
        conn.awaitingPongs++
        conn.transport.ping()
      }
      const now = Date.now()
      for (const [peerId, forward] of forwards) if (forward.until <= now) forwards.delete(peerId)
    },

    /** Rooms this instance has members in, with those members (for TTL refresh). */
    occupiedRooms (): Array<{ roomId: string, peerIds: string[] }> {
      return [...rooms].map(([roomId, members]) => ({ roomId, peerIds: [...members].map(s => s.peerId) }))
    },

    stats () {
      return { connections: connections.size, sessions: sessions.size, rooms: rooms.size }
    },

    /**
     * Closes every socket with 1001 so clients reconnect (and resume)
     * elsewhere; sockets whose peer does not finish the closing handshake
     * within `waitMs` are terminated, so shutdown never hangs on them.
     */
    async shutdown (waitMs: number): Promise<void> {
      shuttingDown = true
      for (const conn of connections) endConnection(conn, 'shutdown')
      const deadline = Date.now() + waitMs
      while (connections.size > 0 && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      for (const conn of connections) conn.transport.terminate()
    },

    /**
     * After shutdown, on a single instance: every remaining member leaves its
     * room in the store (nobody else could resume them). In a cluster the
     * sessions stay for resume elsewhere; see holdSession.
     */
    async drain (): Promise<void> {
      const pending = [...sessions.values()].map(async (session) => {
        forget(session)
        if (session.roomId !== null && cluster === undefined) await store.leaveRoom(session.roomId, session.peerId).catch(() => {})
      })
      await Promise.all(pending)
    }
  }
}

export type SignalingHub = ReturnType<typeof createSignalingHub>
