import type { Store } from '../store/types'
import type { ClientData, ServerData } from '../../schemas/ws'
import { errorText, frame, frameLabels, parseFrame, type InboundMessage } from './protocol'
import type { Connection } from './connection'
import type { Delivery } from './delivery'
import type { LeaveRetries } from './leave-retries'
import type { Mesh } from './mesh'
import type { Outbound } from './outbound'
import type { SessionRegistry } from './registry'
import type { Router } from './router'
import type { Session } from './session'
import type { HubLimits, Logger, SignalingMetrics } from './types'
import { brief, type LogLimiter } from './log-limiter'

/*
 * The client messages of docs/protocol.md §3.2–3.4: parse, rate-limit, one
 * message at a time per connection, and the rules of each type. Where a
 * member is served (here or elsewhere) is the router's business: nothing here
 * asks whether other instances exist.
 */

const JOIN_OK = 'Successfully joined room'

export interface HandlerContext {
  /** The join limiter (rooms and sessions are the mesh's). */
  store: Pick<Store, 'hitJoinRateLimit'>
  /** Client-driven warnings (every join during an outage) are logged at most once per window. */
  warnings: LogLimiter
  limits: HubLimits
  metrics: SignalingMetrics
  log: Logger
  registry: SessionRegistry
  router: Router
  mesh: Mesh
  delivery: Delivery
  outbound: Pick<Outbound, 'send' | 'sendError' | 'broadcast' | 'announce'>
  /** Never fails: the peer has left once its room was told (the store follows when it can). */
  leaveRoom (session: Session): Promise<void>
  /** Leaves the store missed: a join of that room cancels its pending leave. */
  retries: Pick<LeaveRetries, 'cancel'>
}

export function createHandlers (ctx: HandlerContext) {
  const { store, limits, metrics, registry, router, delivery, outbound } = ctx
  const self = ctx.mesh.node

  function internalError (session: Session, err: unknown): void {
    session.log.error({ err }, 'message handler failed')
    if (!session.ended) outbound.sendError(session, 'unavailable')
  }

  function onMessage (conn: Connection, data: Buffer | string, isBinary: boolean): void {
    // Frames a client sent before it saw our shutdown or eviction close still
    // count: it resumes elsewhere believing they were taken (a refusal reaches
    // it there with the rest of what its session held).
    if (conn.serverClose !== null && conn.serverClose !== 'shutdown' && conn.serverClose !== 'evicted') return
    const now = performance.now()
    const session = conn.session
    const admitted = conn.admit(now)
    if (admitted !== 'ok') {
      if (admitted === 'abuse') {
        ctx.log.warn({ peerId: session?.peerId, drops: conn.dropCount }, 'closing connection for sustained message flooding')
        conn.end('abuse')
      } else if (session !== null) {
        // Nothing may precede welcome: while a resume is pending, excess frames just drop.
        outbound.sendError(session, 'rate_limited', { message: 'Message rate limit exceeded; message dropped', ...labels(data, isBinary) })
      }
      return
    }
    if (isBinary) {
      if (session !== null) outbound.sendError(session, 'bad_json', { message: 'Binary frames are not accepted' })
      return
    }
    const raw = typeof data === 'string' ? data : data.toString('utf8')
    // One message at a time per connection, so a relay never overtakes the join before it.
    if (!conn.busy) run(conn, raw, now)
    else if (conn.queue.length < limits.maxQueued) conn.queue.push({ raw, at: now })
    else if (session !== null) {
      // The token bucket bounds the rate, not the backlog: while the store is
      // slow, waiting frames would pile up at the allowed rate.
      outbound.sendError(session, 'rate_limited', { message: 'Too many messages waiting for the previous one; message dropped', ...labels(raw, false) })
    }
  }

  /** The dropped frame's type and id, so the client can tell which message the error answers. */
  function labels (data: Buffer | string, isBinary: boolean): { type?: string, id?: string } {
    if (isBinary) return {}
    return frameLabels(typeof data === 'string' ? data : data.toString('utf8'))
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

  /** Returns a promise only for handlers that wait on the store. */
  function dispatch (session: Session, raw: string, at: number): Promise<void> | undefined {
    const msg = parseFrame(raw)
    if (!msg.ok) {
      metrics.messageIn('invalid')
      outbound.sendError(session, msg.code, { message: msg.message, type: msg.type, id: msg.id })
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
        if (session.roomId !== msg.data.roomId) outbound.sendError(session, 'not_in_room', { type: msg.type, id: msg.id })
        else outbound.broadcast(session.roomId, session, 'initiator-online', { roomId: session.roomId })
        return undefined
      case 'recipient-ready': {
        const claimed = msg.data.roomId
        const roomId = session.roomId
        if (roomId === null || (claimed !== undefined && claimed !== null && claimed !== roomId)) outbound.sendError(session, 'not_in_room', { type: msg.type, id: msg.id })
        else outbound.broadcast(roomId, session, 'recipient-ready', { peerId: session.peerId })
        return undefined
      }
      case 'ping':
        outbound.send(session, 'pong', {}, msg.id)
        return undefined
    }
  }

  /**
   * §3.3: delivered only when sender and target are in the same room right
   * now. The sender's room is checked here; a local target's room too. A
   * target on another instance is checked there against the room stamped
   * here, and a refusal comes back as peer_not_found.
   */
  function relay<T extends 'offer' | 'answer' | 'ice-candidate'> (
    sender: Session, targetId: string, type: T, data: ServerData<T>, id: string | undefined, at: number
  ): void {
    const roomId = sender.roomId
    if (roomId !== null && targetId !== sender.peerId) {
      const target = registry.get(targetId)
      if (target !== undefined ? target.roomId === roomId : router.knows(roomId, targetId)) {
        // Sequenced on every path: a frame delivered here must not overtake
        // an earlier one still coming back from the target's old instance.
        const env = { frame: frame(type, data), type, from: sender.peerId, id: id ?? '', epoch: sender.epoch, seq: sender.nextSeq(targetId), origin: self }
        if (target !== undefined) delivery.deliver(target, env)
        else router.relay(roomId, targetId, env)
        metrics.relayLatency((performance.now() - at) / 1000, target !== undefined ? 'local' : 'remote')
        return
      }
    }
    outbound.sendError(sender, 'peer_not_found', { type, id })
  }

  async function join (session: Session, data: ClientData<'join'>, id: string | undefined): Promise<void> {
    const { roomId } = data
    const reply = (extra: Omit<ServerData<'joinResponse'>, 'roomId'>): void => {
      if (!extra.success && extra.code !== undefined) metrics.error(extra.code)
      outbound.send(session, 'joinResponse', { ...extra, roomId }, id)
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
      // A leave of this room the store missed must not be retried after this join.
      ctx.retries.cancel(roomId, session.peerId)
      const result = await ctx.mesh.joinRoom(roomId, session.peerId, limits.maxPeers, session.secretHash.toString('hex'))
      if (session.ended) {
        // The peer went away while the store answered: undo (the membership
        // and the resumable record the join wrote); nobody was told.
        if (!session.moved) await ctx.mesh.endSession(session.peerId)
        return
      }
      session.recordedByJoin()
      if (!result.ok) {
        reply({ success: false, code: result.code, message: errorText(result.code) })
        return
      }
      if (!rejoin) registry.bind(session, roomId)
      // The store's answer is the current truth for the whole room.
      router.learnRoom(roomId, result.members)
      session.log.info({ rejoin }, 'joined room')
      reply({ success: true, message: JOIN_OK, peerId: session.peerId, peers: result.members.map(m => m.peerId).filter(p => p !== session.peerId) })
      if (!rejoin) outbound.announce(roomId, session.peerId, self)
      outbound.broadcast(roomId, session, 'ready', { peerId: session.peerId })
    } catch (err) {
      const skipped = ctx.warnings.take('join: store unavailable')
      if (skipped !== null) session.log.warn({ error: brief(err), skipped }, 'join failed: store unavailable')
      reply({ success: false, code: 'unavailable', message: errorText('unavailable') })
    }
  }

  async function leave (session: Session, data: ClientData<'leave'>, id: string | undefined): Promise<void> {
    if (session.roomId !== data.roomId) {
      metrics.error('not_in_room')
      outbound.send(session, 'leaveResponse', { success: false, roomId: data.roomId, code: 'not_in_room' }, id)
      return
    }
    await ctx.leaveRoom(session)
    outbound.send(session, 'leaveResponse', { success: true, roomId: data.roomId }, id)
  }

  return { onMessage, drain }
}
