import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { LogFn } from 'pino'
import type { Store } from '../store/types'
import type { IceServer } from '../../schemas/rest'
import {
  CloseCodes, PROTOCOL_VERSION,
  type ClientData, type ErrorCode, type ServerData, type ServerMessageType
} from '../../schemas/ws'
import { errorText, frame, parseFrame, type InboundMessage } from './protocol'

/*
 * The signaling protocol of docs/protocol.md §3 for the connections this
 * process holds. Fastify-free: the /ws route hands each socket in as a
 * Transport and forwards its events.
 *
 * This instance is authoritative for its own peers' rooms: a relay checks the
 * sender's and the target's room here, in memory, and never asks the store.
 * The store holds what must be shared (room existence, capacity, members for
 * joinResponse.peers, the join rate limiter).
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
  secret: string
  roomId: string | null
  ip: string
  conn: Connection | null
  /** Frames for this peer while it is held (connection dropped, inside the grace). */
  held: string[]
  graceTimer: NodeJS.Timeout | null
  ended: boolean
  log: Logger
}

interface Connection {
  readonly session: Session
  readonly transport: Transport
  tokens: number
  refilledAt: number
  drops: number[]
  awaitingPongs: number
  serverClose: ServerCloseReason | null
  busy: boolean
  queue: Array<{ raw: string, at: number }>
}

export type LeaveWithTokenResult = 'left' | 'not_in_room' | 'forbidden'

const JOIN_OK = 'Successfully joined room'

export function createSignalingHub (opts: HubOptions) {
  const { store, limits, metrics } = opts
  const sessions = new Map<string, Session>()
  /** roomId → this instance's members of it (held ones included). */
  const rooms = new Map<string, Set<Session>>()
  const connections = new Set<Connection>()
  const connectionsPerIp = new Map<string, number>()
  let shuttingDown = false

  // --- identity -----------------------------------------------------------

  function newSecret (): string {
    return randomBytes(32).toString('base64url')
  }

  /** `<peerId>.<secret>`: the peer part finds the session, the secret is compared in constant time. */
  function tokenOf (session: Session): string {
    return `${session.peerId}.${session.secret}`
  }

  function sessionForToken (token: string): Session | undefined {
    const dot = token.indexOf('.')
    if (dot <= 0) return undefined
    const session = sessions.get(token.slice(0, dot))
    if (session === undefined || session.ended) return undefined
    const given = Buffer.from(token.slice(dot + 1))
    const expected = Buffer.from(session.secret)
    return given.length === expected.length && timingSafeEqual(given, expected) ? session : undefined
  }

  // --- sending ------------------------------------------------------------

  function sendRaw (session: Session, data: string, type: ServerMessageType): void {
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

  /** Sends one frame to every other member of the room this instance holds. */
  function broadcast<T extends ServerMessageType> (roomId: string, except: Session, type: T, data: ServerData<T>): void {
    const members = rooms.get(roomId)
    if (members === undefined) return
    const data_ = frame(type, data)
    for (const member of members) if (member !== except) sendRaw(member, data_, type)
  }

  // --- membership ---------------------------------------------------------

  function bindRoom (session: Session, roomId: string): void {
    session.roomId = roomId
    let members = rooms.get(roomId)
    if (members === undefined) {
      members = new Set()
      rooms.set(roomId, members)
    }
    members.add(session)
    session.log = opts.log.child({ peerId: session.peerId, roomId })
  }

  function unbindRoom (session: Session): string | null {
    const roomId = session.roomId
    if (roomId === null) return null
    const members = rooms.get(roomId)
    members?.delete(session)
    if (members?.size === 0) rooms.delete(roomId)
    session.roomId = null
    session.log = opts.log.child({ peerId: session.peerId })
    return roomId
  }

  /** Leaves the room now: the others hear of it at once, the store follows. */
  async function leaveRoom (session: Session): Promise<void> {
    const roomId = unbindRoom(session)
    if (roomId === null) return
    broadcast(roomId, session, 'peer-disconnected', { peerId: session.peerId })
    session.log.info({ roomId }, 'left room')
    await store.leaveRoom(roomId, session.peerId)
  }

  /** The session is over for good (clean close, leave on close, grace expired, kicked). */
  function endSession (session: Session): void {
    if (session.ended) return
    session.ended = true
    if (session.graceTimer !== null) clearTimeout(session.graceTimer)
    session.graceTimer = null
    sessions.delete(session.peerId)
    session.held = []
    leaveRoom(session).catch((err: unknown) => {
      session.log.warn({ err }, 'could not remove a departed peer from its room in the store')
    })
  }

  /** The connection dropped without a clean close: keep the identity and room for the grace. */
  function holdSession (session: Session): void {
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
    const count = (connectionsPerIp.get(conn.session.ip) ?? 1) - 1
    if (count <= 0) connectionsPerIp.delete(conn.session.ip)
    else connectionsPerIp.set(conn.session.ip, count)
  }

  function onClosed (conn: Connection, code: number): void {
    detach(conn)
    const session = conn.session
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
      conn.session.log.warn({ drops: conn.drops.length }, 'closing connection for sustained message flooding')
      endConnection(conn, 'abuse')
    }
    return false
  }

  function onMessage (conn: Connection, data: Buffer | string, isBinary: boolean): void {
    if (conn.serverClose !== null) return
    const now = performance.now()
    const session = conn.session
    if (!admit(conn, now)) {
      if (conn.serverClose === null) sendError(session, 'rate_limited', { message: 'Message rate limit exceeded; message dropped' })
      return
    }
    if (isBinary) {
      sendError(session, 'bad_json', { message: 'Binary frames are not accepted' })
      return
    }
    const raw = typeof data === 'string' ? data : data.toString('utf8')
    // One message at a time per connection, so a relay never overtakes the join before it.
    if (conn.busy) conn.queue.push({ raw, at: now })
    else run(conn, raw, now)
  }

  function run (conn: Connection, raw: string, at: number): void {
    let pending: Promise<void> | undefined
    try {
      pending = dispatch(conn.session, raw, at)
    } catch (err) {
      internalError(conn.session, err)
    }
    if (pending === undefined) return
    conn.busy = true
    pending.catch((err: unknown) => internalError(conn.session, err)).finally(() => {
      conn.busy = false
      while (!conn.busy && conn.queue.length > 0) {
        const next = conn.queue.shift()
        if (next !== undefined) run(conn, next.raw, next.at)
      }
    })
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

  /** §3.3: delivered only when sender and target are in the same room right now. */
  function relay<T extends 'offer' | 'answer' | 'ice-candidate'> (
    sender: Session, targetId: string, type: T, data: ServerData<T>, id: string | undefined, at: number
  ): void {
    const target = sessions.get(targetId)
    if (sender.roomId === null || target === undefined || target === sender || target.roomId !== sender.roomId) {
      sendError(sender, 'peer_not_found', { type, id })
      return
    }
    send(target, type, data)
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
      const result = await store.joinRoom(roomId, session.peerId, limits.maxPeers)
      if (session.ended) {
        // The peer went away while the store answered: undo, nobody was told.
        await store.leaveRoom(roomId, session.peerId)
        return
      }
      if (!result.ok) {
        reply({ success: false, code: result.code, message: errorText(result.code) })
        return
      }
      if (!rejoin) bindRoom(session, roomId)
      session.log.info({ rejoin }, 'joined room')
      reply({ success: true, message: JOIN_OK, peerId: session.peerId, peers: result.members.filter(p => p !== session.peerId) })
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
      send(session, 'leaveResponse', { success: true, roomId: data.roomId }, id)
    } catch (err) {
      // Locally the peer has left (others were told); the store entry expires with the room.
      session.log.warn({ err }, 'leave: store unavailable')
      send(session, 'leaveResponse', { success: true, roomId: data.roomId }, id)
    }
  }

  // --- public API -----------------------------------------------------------

  return {
    /** Open WebSocket connections from this IP (checked before an upgrade). */
    connectionsFrom (ip: string): number {
      return connectionsPerIp.get(ip) ?? 0
    },

    /** Attaches a freshly upgraded socket: resumes the session its token names, or starts a new one. */
    open (transport: Transport, ctx: { ip: string, resumeToken?: string }): ConnectionHandle {
      let session = ctx.resumeToken === undefined ? undefined : sessionForToken(ctx.resumeToken)
      const resumed = session !== undefined
      if (session === undefined) {
        const peerId = randomBytes(16).toString('base64url')
        session = { peerId, secret: newSecret(), roomId: null, ip: ctx.ip, conn: null, held: [], graceTimer: null, ended: false, log: opts.log.child({ peerId }) }
        sessions.set(peerId, session)
      } else {
        if (session.graceTimer !== null) clearTimeout(session.graceTimer)
        session.graceTimer = null
        // A half-open old connection is taken over.
        if (session.conn !== null) endConnection(session.conn, 'replaced')
        session.secret = newSecret() // rotate: the token just used is dead
        session.ip = ctx.ip
        metrics.resume()
      }

      const conn: Connection = {
        session,
        transport,
        tokens: limits.rateBurst,
        refilledAt: performance.now(),
        drops: [],
        awaitingPongs: 0,
        serverClose: null,
        busy: false,
        queue: []
      }
      connections.add(conn)
      connectionsPerIp.set(ctx.ip, (connectionsPerIp.get(ctx.ip) ?? 0) + 1)
      session.conn = conn

      send(session, 'welcome', {
        peerId: session.peerId,
        protocol: PROTOCOL_VERSION,
        heartbeatMs: limits.heartbeatMs,
        resumeToken: tokenOf(session),
        iceServers: opts.iceServers(session.peerId)
      })
      if (resumed) {
        const held = session.held
        session.held = []
        session.log.info({ delivered: held.length }, 'session resumed')
        for (const data of held) {
          transport.send(data)
        }
      } else {
        session.log.debug('connected')
      }

      const owned = conn
      return {
        message: (data, isBinary) => onMessage(owned, data, isBinary),
        pong: () => { owned.awaitingPongs = 0 },
        closed: (code) => onClosed(owned, code),
        protocolError: () => {
          // ws already sent the close frame (1009 or 1007); the peer is not held for resume.
          if (owned.serverClose === null) owned.serverClose = 'oversize'
        }
      }
    },

    /** POST /api/leave_room: leave on behalf of a session that proves itself with its token. */
    async leaveWithToken (roomId: string, peerId: string, token: string): Promise<LeaveWithTokenResult> {
      const session = sessionForToken(token)
      if (session === undefined || session.peerId !== peerId) return 'forbidden'
      if (session.roomId !== roomId) return 'not_in_room'
      await leaveRoom(session)
      return 'left'
    },

    /** One heartbeat round: ping everyone, terminate whoever missed two pongs. */
    heartbeat (): void {
      for (const conn of connections) {
        if (conn.serverClose !== null) continue
        if (conn.awaitingPongs >= 2) {
          conn.session.log.info('heartbeat: two pongs missed, terminating')
          endConnection(conn, 'heartbeat')
          continue
        }
        conn.awaitingPongs++
        conn.transport.ping()
      }
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

    /** Ends every remaining session (after shutdown): members leave their rooms in the store. */
    async drain (): Promise<void> {
      const pending = [...sessions.values()].map(async (session) => {
        session.ended = true
        if (session.graceTimer !== null) clearTimeout(session.graceTimer)
        sessions.delete(session.peerId)
        const roomId = unbindRoom(session)
        if (roomId !== null) await store.leaveRoom(roomId, session.peerId).catch(() => {})
      })
      await Promise.all(pending)
    }
  }
}

export type SignalingHub = ReturnType<typeof createSignalingHub>
