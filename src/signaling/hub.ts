import type { Store } from '../store/types'
import type { IceServer } from '../../schemas/rest'
import { PROTOCOL_VERSION, type ErrorCode, type ServerData, type ServerMessageType } from '../../schemas/ws'
import { errorText, frame, frameLabels } from './protocol'
import { RELAY_TYPES, type BusMessage, type Envelope, type RefusalCode } from './bus'
import { Fence } from './fence'
import { Connection, ConnectionRegistry } from './connection'
import { createDelivery, type Session } from './delivery'
import { createHandlers } from './handlers'
import { createInbound } from './inbound'
import type { Mesh } from './mesh'
import { createMoves } from './moves'
import { SessionRegistry } from './registry'
import { createRouter } from './router'
import { LogLimiter, brief } from './log-limiter'
import { issueToken, secretMatches, splitToken } from './tokens'
import { systemClock, type Clock, type ConnectionHandle, type HubLimits, type Logger, type SignalingMetrics, type TimerHandle, type Transport } from './types'

/*
 * The signaling core of one instance (docs/protocol.md §3), Fastify-free:
 * the /ws route hands each socket in as a Transport and forwards its events.
 * This module wires the parts and owns session lifecycles: connect, resume,
 * hold and end. The parts: connection (rate limit, serial queue), registry
 * (sessions and local room members), delivery (to one peer, in order),
 * router (to peers on other instances), moves (sessions changing instance),
 * inbound (messages from other instances), handlers (the §3 rules), and the
 * mesh port.
 *
 * This instance is authoritative for its own peers' rooms: a relay checks the
 * sender's room here and the target's room where the target is served.
 */

export type { ConnectionHandle, HubLimits, Logger, SignalingMetrics, Transport } from './types'

export interface HubOptions {
  store: Store
  mesh: Mesh
  log: Logger
  limits: HubLimits
  iceServers: (peerId: string) => IceServer[]
  metrics: SignalingMetrics
  clock?: Clock
  /** Whether the registry (Redis) answers now: while it does not, held sessions do not expire. Default: always. */
  linkHealthy?: () => boolean
  /** The count of an IP's connections and held sessions here may have changed (the fleet-wide cap's share). */
  countChanged?: (ip: string) => void
}

export type LeaveWithTokenResult = 'left' | 'not_in_room' | 'forbidden'

/** A session whose end found it claimed elsewhere waits this long for the new owner's release. */
const RELEASE_WAIT_MS = 5000
/** Leaves the store missed (Redis down) are retried this often, at most this many kept. */
const LEAVE_RETRY_MS = 2000
const MAX_UNFINISHED_LEAVES = 10_000
/** While the registry cannot be reached, an expired grace is looked at again this often (the session may have been claimed elsewhere). */
const GRACE_RECHECK_MS = 1000
/** Inputs kept behind a closed fence at most (a stall together with a Redis outage); beyond it they are dropped with a warning. */
const FENCE_QUEUE_MAX = 200_000
/** A refusal the mesh could not carry is tried again this often, this many times in all. */
const REFUSAL_RETRY_MS = 500
const REFUSAL_ATTEMPTS = 30
/** A rewrite of the registry that failed is tried again this often. */
const RESTORE_RETRY_MS = 500

export function createSignalingHub (opts: HubOptions) {
  const { store, mesh, limits, metrics } = opts
  const clock = opts.clock ?? systemClock
  const self = mesh.node
  const linkHealthy = opts.linkHealthy ?? (() => true)
  const connections = new ConnectionRegistry(heartbeatSlices(limits.heartbeatMs))
  const warnings = new LogLimiter(clock)
  const unfinishedLeaves = new Map<string, { roomId: string, peerId: string }>()
  let leaveRetry: TimerHandle | null = null
  let shuttingDown = false
  /** Set while this instance, cut off from the registry, has sent its clients elsewhere (upgrades are refused meanwhile). */
  let evicted = false
  let evictTimer: TimerHandle | null = null

  const delivery = createDelivery({
    clock,
    metrics,
    resumeBufferMax: limits.resumeBufferMax,
    resumeBufferBytes: limits.resumeBufferBytes,
    maxBufferedBytes: limits.maxBufferedBytes,
    warnings,
    undeliverable,
    outOfOrder: env => refuse(env, 'unavailable')
  })

  const router = createRouter({
    mesh,
    clock,
    metrics,
    log: opts.log.child({ component: 'router' }),
    warnings,
    queueMax: Math.max(limits.resumeBufferMax, 1),
    deadlineMs: limits.rerouteDeadlineMs,
    orphaned (peerId, roomId, env) {
      const session = registry.get(peerId)
      if (session !== undefined && session.roomId === roomId) delivery.deliver(session, env)
      else undeliverable(env)
    },
    failed (env, unknown) {
      // `unavailable` promises "not applied": a publish that reached Redis and
      // then lost its answer may have been delivered, so it gets its own code.
      if (env.origin === self && RELAY_TYPES.has(env.type)) notify(env.from, unknown ? 'outcome_unknown' : 'unavailable', env.type, env.id)
    }
  })

  const registry = new SessionRegistry(opts.log, (roomId) => router.dropRoom(roomId))

  // --- telling peers ----------------------------------------------------------

  /** A direct reply to a peer's own message: to its socket, or held with the rest while it is away. */
  function send<T extends ServerMessageType> (session: Session, type: T, data: ServerData<T>, id?: string): void {
    const text = frame(type, data, id)
    const conn = session.conn
    if (conn !== null && conn.writable && session.held.length === 0) {
      conn.transport.send(text)
      metrics.messageOut(type)
    } else if (session.roomId !== null || (conn !== null && conn.writable)) {
      // Away, or frames wait for a slow socket: the reply waits its turn behind them.
      delivery.deliver(session, { frame: text, type, from: '', id: '', epoch: 0, seq: 0, origin: self })
    }
  }

  function sendError (session: Session, code: ErrorCode, extra: { type?: string, id?: string, message?: string } = {}): void {
    metrics.error(code)
    const data: ServerData<'error'> = { code, message: extra.message ?? errorText(code) }
    if (extra.type !== undefined) data.type = extra.type
    send(session, 'error', data, extra.id)
  }

  /**
   * An error for a sender about one of its relays: to it here, or on to the
   * instance it moved to (a refusal must reach the sender wherever it is now).
   */
  function notify (peerId: string, code: RefusalCode, type: string, id: string): void {
    const sender = registry.get(peerId)
    if (sender !== undefined && !sender.moved) {
      sendError(sender, code, { type, id: id === '' ? undefined : id })
      return
    }
    const node = moves.forwardTo(peerId)
    if (node !== undefined && node !== self) postRefusal(node, { kind: 'R', origin: self, from: peerId, type, id, code })
  }

  /** A relay refused where it stands: its sender hears `code` by id, wherever it is. */
  function refuse (env: Envelope, code: RefusalCode): void {
    if (!RELAY_TYPES.has(env.type) || env.from === '') return
    if (env.origin === self) notify(env.from, code, env.type, env.id)
    else if (code === 'peer_not_found') postRefusal(env.origin, { kind: 'F', origin: self, from: env.from, type: env.type, id: env.id })
    else postRefusal(env.origin, { kind: 'R', origin: self, from: env.from, type: env.type, id: env.id, code })
  }

  /**
   * A refusal is the sender's only word on a relay it was told nothing else
   * about: while the mesh cannot carry it (a link that just came back from a
   * stall or an outage), it is tried again, not dropped.
   */
  function postRefusal (node: string, msg: BusMessage, attempt = 0): void {
    mesh.send(node, msg).catch(() => {
      if (attempt + 1 >= REFUSAL_ATTEMPTS) {
        const skipped = warnings.take('refusal: mesh unreachable')
        if (skipped !== null) opts.log.warn({ node, kind: msg.kind, skipped }, 'could not tell another instance of a refusal; gave up')
        return
      }
      clock.setTimeout(() => postRefusal(node, msg, attempt + 1), REFUSAL_RETRY_MS)
    })
  }

  /** A relay that will never reach its target: its sender hears peer_not_found, wherever it is. */
  function undeliverable (env: Envelope): void {
    refuse(env, 'peer_not_found')
  }

  /** Sends to another instance where nobody waits for the answer; failures are logged. */
  function post (node: string, msg: BusMessage): Promise<boolean> {
    return mesh.send(node, msg).catch((err: unknown) => {
      const skipped = warnings.take('post: mesh unreachable')
      if (skipped !== null) opts.log.warn({ error: brief(err), node, kind: msg.kind, skipped }, 'could not reach another instance')
      return false
    })
  }

  /** Sends one server frame to every other member of a room, here and on other instances. */
  function broadcast<T extends ServerMessageType> (roomId: string, sender: Session, type: T, data: ServerData<T>): void {
    const text = frame(type, data)
    const env: Envelope = { frame: text, type, from: sender.peerId, id: '', epoch: sender.epoch, seq: 0, origin: self }
    for (const member of registry.members(roomId)) if (member !== sender) delivery.deliver(member, { ...env, seq: sender.nextSeq(member.peerId) })
    router.broadcast(roomId, sender.peerId, target => ({ ...env, seq: sender.nextSeq(target) }))
  }

  /** Tells the other instances in a room where a member is served now ('' = it left). */
  function announce (roomId: string, peerId: string, node: string): void {
    for (const other of router.nodesOf(roomId)) post(other, { kind: 'M', origin: self, roomId, peerId, node })
  }

  // --- membership -------------------------------------------------------------

  /** The peer is no longer in its room: the others hear of it at once, here and elsewhere. */
  function departed (session: Session): string | null {
    const roomId = session.roomId
    if (roomId === null) return null
    broadcast(roomId, session, 'peer-disconnected', { peerId: session.peerId })
    announce(roomId, session.peerId, '')
    registry.unbind(session)
    session.log.info({ roomId }, 'left room')
    return roomId
  }

  /**
   * Leaves the room now; the store follows. The peer has left once the room
   * was told, so this never fails: a store write that fails (Redis down) is
   * retried until it lands, so no ghost member stays in the shared room.
   */
  async function leaveRoom (session: Session): Promise<void> {
    const roomId = departed(session)
    if (roomId === null) return
    try {
      await store.leaveRoom(roomId, session.peerId)
    } catch (err) {
      const skipped = warnings.take('leave: store unavailable')
      if (skipped !== null) session.log.warn({ error: brief(err), skipped }, 'left the room; the store is told once it is back')
      unfinishedLeave(roomId, session.peerId)
    }
  }

  /**
   * Makes `peerId` leave `roomId` for a REST caller, here or on the instance
   * that serves it (through the mesh); `proven` checks the caller's proof
   * against the session's stored secret hash.
   */
  async function leaveOnBehalf (roomId: string, peerId: string, proven: (stored: Buffer | string) => boolean): Promise<LeaveWithTokenResult> {
    const session = registry.get(peerId)
    if (session !== undefined) {
      if (session.ended || !proven(session.secretHash)) return 'forbidden'
      if (session.roomId !== roomId) return 'not_in_room'
      await leaveRoom(session)
      return 'left'
    }
    const record = await mesh.readSession(peerId)
    if (record === null || !proven(record.secret)) return 'forbidden'
    if (record.room !== roomId) return 'not_in_room'
    if (!await mesh.send(record.node, { kind: 'L', origin: self, peerId, roomId })) {
      // Its instance is gone: end the session here, on that instance's behalf.
      const ended = await mesh.endSession(peerId, roomId, record.node)
      if (ended !== null) moves.gone([ended])
    }
    return 'left'
  }

  function unfinishedLeave (roomId: string, peerId: string): void {
    if (unfinishedLeaves.size >= MAX_UNFINISHED_LEAVES) return // beyond this, the room's TTL cleans up
    unfinishedLeaves.set(`${roomId}\n${peerId}`, { roomId, peerId })
    leaveRetry ??= clock.setTimeout(() => {
      retryLeaves().finally(() => {
        leaveRetry = null
        const next = unfinishedLeaves.values().next()
        if (next.done !== true) unfinishedLeave(next.value.roomId, next.value.peerId) // re-arms the timer
      })
    }, LEAVE_RETRY_MS)
  }

  async function retryLeaves (): Promise<void> {
    for (const [key, { roomId, peerId }] of [...unfinishedLeaves]) {
      // Cancelled by a join of that room (on the same connection to the store,
      // so a leave sent before the join is applied before it).
      if (!unfinishedLeaves.has(key)) continue
      if (registry.get(peerId)?.roomId !== roomId) {
        try {
          await store.leaveRoom(roomId, peerId)
        } catch {
          return
        }
      }
      unfinishedLeaves.delete(key)
    }
  }

  /** Drops a session from this instance only, leaving its shared state alone (it lives on elsewhere). */
  function forget (session: Session): void {
    session.ended = true
    session.moved = true
    clearTimers(session)
    registry.remove(session)
    registry.unbind(session)
    // A held session that moved away no longer counts toward its IP's share here.
    opts.countChanged?.(session.ip)
  }

  function clearTimers (session: Session): void {
    if (session.graceTimer !== null) clock.clearTimeout(session.graceTimer)
    session.graceTimer = null
    moves.cancel(session)
  }

  /** The session is over for good (clean close, grace expired, kicked). */
  function endSession (session: Session): void {
    if (session.ended) return
    session.ended = true
    registry.unhold(session)
    clearTimers(session)
    if (!session.recorded) {
      // Never in a room: nothing shared to end, nobody to tell.
      finish(session)
      return
    }
    // The shared record goes first (with the room membership, in one step),
    // so once the room hears of the departure the token resumes nowhere.
    mesh.endSession(session.peerId, session.roomId).then((ended) => {
      if (ended !== null) finish(session)
      else {
        // Claimed by another instance meanwhile: its release (with the handover) is on its way.
        session.log.info('session resumed elsewhere as it ended here; waiting for the release')
        session.graceTimer = clock.setTimeout(() => { releaseMissed(session) }, RELEASE_WAIT_MS)
      }
    }, (err: unknown) => {
      const skipped = warnings.take('end session: store unavailable')
      if (skipped !== null) session.log.warn({ error: brief(err), skipped }, 'could not end the session in the store; its entries expire with their TTL')
      finish(session)
    })
  }

  function finish (session: Session): void {
    opts.countChanged?.(session.ip)
    session.graceTimer = null
    registry.remove(session)
    delivery.discard(session)
    departed(session)
  }

  /**
   * The session was not ours to end, and no release came: ask who owns it.
   * Another instance → hand over to it as a release would. Nobody → whoever
   * ended it told the room; only what was held here is refused.
   */
  function releaseMissed (session: Session): void {
    session.graceTimer = null
    if (registry.get(session.peerId) !== session) return
    mesh.ownerOf(session.peerId).then((owner) => {
      if (registry.get(session.peerId) !== session) return
      if (owner !== null && owner !== self) moves.release(session.peerId, owner)
      else {
        forget(session)
        delivery.discard(session)
      }
    }, () => {
      forget(session)
      delivery.discard(session)
    })
  }

  /** The connection dropped without a clean close: keep the identity and room for the grace. */
  function holdSession (session: Session): void {
    // Nothing to resume without a room; alone, nobody could take the session over after shutdown.
    if (session.roomId === null || limits.resumeGraceMs === 0 || (shuttingDown && !mesh.shared)) {
      endSession(session)
      return
    }
    session.log.info({ graceMs: limits.resumeGraceMs }, 'connection dropped, holding session for resume')
    registry.hold(session)
    const expire = (): void => {
      // Cut off from the registry, this instance cannot tell whether the peer
      // resumed elsewhere meanwhile, nor end the session there: it waits.
      if (!linkHealthy()) {
        session.graceTimer = clock.setTimeout(expire, GRACE_RECHECK_MS)
        return
      }
      session.graceTimer = null
      registry.unhold(session)
      session.log.info('resume grace expired')
      endSession(session)
    }
    session.graceTimer = clock.setTimeout(expire, limits.resumeGraceMs)
  }

  // --- faults: a stall, a lost link to the registry ---------------------------------

  /**
   * After a stall or a lost link: asks the registry who owns each recorded
   * session, and lets go of those claimed or ended elsewhere meanwhile, before
   * anything read in the meantime is acted on (fence.ts).
   */
  async function verifyOwnership (): Promise<boolean> {
    const sessions = registry.all().filter(s => s.recorded && !s.ended)
    if (sessions.length === 0) return true
    const found = await mesh.ownersOf(sessions.map(s => s.peerId))
    if (found === null) {
      opts.log.warn({ sessions: sessions.length }, 'the registry lost its data: no session is taken as claimed or ended elsewhere')
      return true
    }
    let lost = 0
    const missing: Session[] = []
    for (const session of sessions) {
      if (registry.get(session.peerId) !== session || session.ended) continue
      const owner = found.owners.get(session.peerId) ?? null
      if (owner === self) continue
      // Never silent long enough to be reaped: nobody ended it, Redis lost it
      // (a failover to a replica that had not caught up). It is rewritten.
      if (owner === null && !found.reapable) {
        missing.push(session)
        continue
      }
      lost++
      lose(session, owner)
    }
    if (missing.length > 0) {
      opts.log.warn({ sessions: missing.length }, 'session records missing though this instance was never silent long enough to be reaped: rewriting them')
      await mesh.restore(missing.map(s => ({ peerId: s.peerId, secret: s.secretHash.toString('hex'), roomId: s.roomId, epoch: s.epoch })))
    }
    opts.log.info({ sessions: sessions.length, lost, rewritten: missing.length }, 'session ownership checked')
    return true
  }

  /**
   * A session this instance no longer owns. Claimed by another instance: hand
   * over as a release would (what is held goes there through its sequence
   * check, frames still arriving are passed on, the stale socket is replaced).
   * Ended elsewhere (this instance was reaped): its room was told then; the
   * stale socket is closed so the client starts afresh.
   */
  function lose (session: Session, owner: string | null): void {
    if (owner !== null) {
      moves.release(session.peerId, owner)
      return
    }
    const conn = session.conn
    session.log.info('session was ended elsewhere while this instance could not tell')
    forget(session)
    delivery.discard(session)
    conn?.end('evicted')
  }

  /**
   * The registry lost its data: rewrite every session this instance serves
   * (connected or held) with its room, until it lands.
   */
  function restoreRegistry (): void {
    const sessions = registry.all().filter(s => s.recorded && !s.ended)
    const entries = sessions.map(s => ({ peerId: s.peerId, secret: s.secretHash.toString('hex'), roomId: s.roomId, epoch: s.epoch }))
    mesh.restore(entries).then(() => {
      opts.log.warn({ sessions: entries.length }, 'rewrote this instance\'s sessions and rooms into the registry')
    }, (err: unknown) => {
      opts.log.warn({ error: brief(err) }, 'could not rewrite the registry yet; retrying')
      clock.setTimeout(restoreRegistry, RESTORE_RETRY_MS)
    })
  }

  const fence = limits.stallCheckMs <= 0
    ? null
    : new Fence({
      clock,
      log: opts.log.child({ component: 'fence' }),
      stallMs: limits.stallCheckMs,
      verify: verifyOwnership,
      linkHealthy,
      queueMax: FENCE_QUEUE_MAX,
      overflow: (scope) => {
        const skipped = warnings.take('fence: queue full')
        if (skipped !== null) opts.log.warn({ scope, skipped }, 'too many inputs waiting for the ownership check; dropped')
      }
    })

  /** Cut off from the registry for evictAfterMs: clients go to instances that can reach it. */
  function evict (): void {
    evictTimer = null
    if (!mesh.othersSeen) {
      opts.log.warn('cut off from Redis, but no other instance was seen to take the clients: keeping them')
      return
    }
    evicted = true
    opts.log.warn({ connections: connections.size }, 'cut off from Redis: closing connections with 1012 so clients resume on instances that can reach it')
    for (const conn of connections) conn.end('evicted')
  }

  /** A client message on a connection whose session moved to another instance: relays are refused there, by id. */
  function clientMessage (conn: Connection, data: Buffer | string, isBinary: boolean): void {
    const session = conn.session
    if (session !== null && session.moved && !isBinary) {
      const { type, id } = frameLabels(typeof data === 'string' ? data : data.toString('utf8'))
      if (type !== undefined && id !== undefined && RELAY_TYPES.has(type)) notify(session.peerId, 'unavailable', type, id)
      return
    }
    handlers.onMessage(conn, data, isBinary)
  }

  const moves = createMoves({ mesh, registry, delivery, router, clock, metrics, log: opts.log, post, undeliverable, announce, forget })

  // --- connections ----------------------------------------------------------------

  /** Binds a connection to its session and greets it: welcome first, then anything held. */
  function attach (conn: Connection, session: Session, token: string, resumed: boolean): void {
    conn.session = session
    if (conn.closedCode !== null) {
      // The socket went away while the resume was looked up.
      if (resumed) holdSession(session)
      else endSession(session)
      return
    }
    if (session.graceTimer !== null) clock.clearTimeout(session.graceTimer)
    session.graceTimer = null
    registry.unhold(session)
    // A half-open old connection is taken over.
    if (session.conn !== null && session.conn !== conn) session.conn.end('replaced')
    session.ip = conn.ip
    session.conn = conn
    conn.transport.send(frame('welcome', {
      peerId: session.peerId,
      protocol: PROTOCOL_VERSION,
      heartbeatMs: limits.heartbeatMs,
      resumeToken: token,
      iceServers: opts.iceServers(session.peerId)
    }))
    metrics.messageOut('welcome')
    if (resumed) {
      metrics.resume()
      session.log.info({ delivered: delivery.flushHeld(session) }, 'session resumed')
    } else {
      session.log.debug('connected')
    }
  }

  function onClosed (conn: Connection, code: number): void {
    connections.remove(conn)
    conn.closedCode = code
    opts.countChanged?.(conn.ip)
    metrics.closed(conn.closeReason)
    const session = conn.session
    if (session === null) return // still resolving a resume: attach() sees closedCode
    if (session.conn !== conn) return // replaced by a resumed connection: nothing to do
    session.conn = null
    if (session.ended) return // let go of already (it lives on elsewhere, or is over)
    if (conn.holdsSession) holdSession(session)
    else {
      session.log.info({ code, reason: conn.serverClose }, 'connection closed')
      endSession(session)
    }
  }

  const handlers = createHandlers({
    store,
    warnings,
    limits,
    metrics,
    log: opts.log,
    registry,
    router,
    mesh,
    delivery,
    self,
    send,
    sendError,
    broadcast,
    announce,
    leaveRoom,
    cancelLeave: (roomId, peerId) => { unfinishedLeaves.delete(`${roomId}\n${peerId}`) },
    internalError: (session, err) => {
      session.log.error({ err }, 'message handler failed')
      if (!session.ended) sendError(session, 'unavailable')
    }
  })

  const onBus = createInbound({
    self,
    registry,
    delivery,
    router,
    moves,
    post,
    undeliverable,
    refused: notify,
    leaveRoom
  })

  /** Resumes the session a token names (here, or taken over from another instance), or starts a new one. */
  function greet (conn: Connection, ctx: { ip: string, resumeToken?: string }): void {
    const token = ctx.resumeToken
    const local = token === undefined ? undefined : registry.forToken(token)
    if (local !== undefined) {
      const issued = issueToken(local.peerId)
      local.secretHash = issued.hash
      if (local.roomId !== null) {
        mesh.rotateSecret(local.peerId, issued.hash.toString('hex')).catch((err: unknown) => {
          const skipped = warnings.take('rotate: store unavailable')
          if (skipped !== null) local.log.warn({ error: brief(err), skipped }, 'rotated token not recorded in the store; it works on this instance only')
        })
      }
      attach(conn, local, issued.token, true)
    } else if (token !== undefined && splitToken(token) !== null) {
      // The session may live on another instance: frames wait until it is settled.
      conn.busy = true
      moves.resume(token, ctx.ip)
        .catch((err: unknown) => {
          const skipped = warnings.take('resume: store unavailable')
          if (skipped !== null) opts.log.warn({ error: brief(err), skipped }, 'resume lookup failed; the client is told to try again (1013)')
          return 'retry' as const
        })
        .then((found) => {
          // Not knowing is not "no such session": a new identity would lose the peer's room for nothing.
          if (found === 'retry') conn.end('retry')
          else if (found !== null) attach(conn, found.session, found.token, true)
          else {
            const created = registry.fresh(ctx.ip)
            attach(conn, created.session, created.token, false)
          }
          conn.busy = false
          handlers.drain(conn)
        })
        .catch((err: unknown) => opts.log.error({ err }, 'attaching a connection failed'))
    } else {
      const created = registry.fresh(ctx.ip)
      attach(conn, created.session, created.token, false)
    }
  }

  /**
   * A socket's events, forwarded to its connection. One small object per
   * connection with the methods on its prototype: closures would cost a
   * function object each, and keep open()'s scope alive with them.
   */
  class Handle implements ConnectionHandle {
    constructor (private readonly conn: Connection) {}

    message (data: Buffer | string, isBinary: boolean): void {
      const conn = this.conn
      if (fence === null) clientMessage(conn, data, isBinary)
      else fence.run('client', () => clientMessage(conn, data, isBinary))
    }

    pong (): void {
      this.conn.awaitingPongs = 0
    }

    closed (code: number): void {
      const conn = this.conn
      if (fence === null) onClosed(conn, code)
      else fence.run('client', () => onClosed(conn, code))
    }

    protocolError (): void {
      // ws already sent the close frame (1009 or 1007); the peer is not held for resume.
      if (this.conn.serverClose === null) this.conn.serverClose = 'oversize'
    }
  }

  // --- public API -----------------------------------------------------------------

  return {
    /**
     * What counts toward this IP's connection cap (checked before an upgrade):
     * its open connections and the sessions held for its resume, except the
     * one `resumeToken` would take back.
     */
    connectionsFrom (ip: string, resumeToken?: string): number {
      const resumed = resumeToken === undefined ? undefined : registry.forToken(resumeToken)
      const back = resumed !== undefined && registry.isHeldFrom(resumed, ip) ? 1 : 0
      return connections.from(ip) + registry.heldFrom(ip) - back
    },

    /** Attaches a freshly upgraded socket: resumes the session its token names, or starts a new one. */
    open (transport: Transport, ctx: { ip: string, resumeToken?: string }): ConnectionHandle {
      const conn = new Connection(transport, ctx.ip, limits, performance.now())
      connections.add(conn)
      // Behind a closed fence, even the greeting waits: a local resume must not
      // take back a session that may have been claimed elsewhere meanwhile.
      if (fence === null) greet(conn, ctx)
      else fence.run('client', () => greet(conn, ctx))

      return new Handle(conn)
    },

    /** A message from another instance (behind the fence after a stall or a lost link). */
    onBus (msg: BusMessage): void {
      if (fence === null) onBus(msg)
      else fence.run('bus', () => onBus(msg))
    },

    /** The registry link went down or came back (the Redis link's circuit). */
    linkChanged (healthy: boolean): void {
      if (!healthy) {
        fence?.linkLost()
        if (evictTimer === null && limits.evictAfterMs > 0) evictTimer = clock.setTimeout(evict, limits.evictAfterMs)
        return
      }
      if (evictTimer !== null) clock.clearTimeout(evictTimer)
      evictTimer = null
      if (evicted) opts.log.info('redis reachable again: accepting connections')
      evicted = false
      fence?.linkBack()
    },

    /** False while this instance has sent its clients elsewhere (cut off from Redis): upgrades are refused. */
    accepting (): boolean {
      return !evicted
    },

    /** Starts the stall watchdog (Redis mode); returns its stop function. */
    startWatchdog (): () => void {
      fence?.start()
      return () => fence?.stop()
    },

    /** How often the fence closed (after a stall, after a lost link): for tests and diagnostics. */
    fenceStats (): { stalls: number, linkLosses: number, closed: boolean } {
      return { stalls: fence?.stalls ?? 0, linkLosses: fence?.linkLosses ?? 0, closed: fence?.closed('bus') ?? false }
    },

    /** Sessions of a vanished instance were ended (by this instance, after the grace): tell their rooms. */
    peersGone: moves.gone,

    /** The registry lost its data: rewrite what this instance serves. */
    registryLost: restoreRegistry,

    /** The live instance that holds the session a resume token names, when it is not this one. */
    async heldElsewhere (token: string): Promise<string | null> {
      const parts = splitToken(token)
      if (parts === null || registry.has(parts.peerId)) return null
      const record = await mesh.readSession(parts.peerId).catch(() => null)
      return record !== null && record.node !== self ? record.node : null
    },

    /** The instances seen alive at the last heartbeat (this one included). */
    liveNodes (): readonly string[] {
      return mesh.liveNodes
    },

    /** False while this instance cannot hear the other instances. */
    reachable (): boolean {
      return mesh.reachable
    },

    /** POST /api/leave_room: leave on behalf of a session that proves itself with its token. */
    async leaveWithToken (roomId: string, peerId: string, token: string): Promise<LeaveWithTokenResult> {
      const parts = splitToken(token)
      if (parts === null || parts.peerId !== peerId) return 'forbidden'
      return await leaveOnBehalf(roomId, peerId, stored => secretMatches(parts.secret, stored))
    },

    /**
     * POST /api/leave_room with the old body (LEGACY_LEAVE_ROOM): the same
     * leave, wherever the peer is served, on the peer id alone. An unknown or
     * ended peer is simply not in the room.
     */
    async leaveByPeerId (roomId: string, peerId: string): Promise<Exclude<LeaveWithTokenResult, 'forbidden'>> {
      const result = await leaveOnBehalf(roomId, peerId, () => true)
      return result === 'forbidden' ? 'not_in_room' : result
    },

    /**
     * One slice of the heartbeat round (call every heartbeatMs / heartbeatSlices):
     * ping its connections, terminate whoever missed two pongs.
     */
    heartbeatTick (): void {
      // Pongs read behind a closed fence have not been counted yet.
      if (fence?.closed('client') === true) return
      const { dead, roundStarted } = connections.sweepSlice()
      for (const conn of dead) {
        conn.session?.log.info('heartbeat: two pongs missed, terminating')
        conn.end('heartbeat')
      }
      if (roundStarted) moves.sweep()
    },

    /** A whole heartbeat round at once: every connection pinged (tests and tools). */
    heartbeat (): void {
      for (let i = 0; i < connections.slices; i++) this.heartbeatTick()
    },

    /** Rooms this instance has members in, with those members (for TTL refresh). */
    occupiedRooms (): Array<{ roomId: string, peerIds: string[] }> {
      return registry.occupied()
    },

    stats () {
      return { connections: connections.size, sessions: registry.size, rooms: registry.roomCount, ...router.stats() }
    },

    /** Sessions held for resume (their connection dropped, within the grace). */
    heldSessions (): number {
      return registry.held
    },

    /**
     * Closes every socket with 1001 so clients reconnect (and resume)
     * elsewhere; sockets whose peer does not finish the closing handshake
     * within `waitMs` are terminated, so shutdown never hangs on them.
     */
    async shutdown (waitMs: number): Promise<void> {
      shuttingDown = true
      for (const conn of connections) conn.end('shutdown')
      const deadline = Date.now() + waitMs
      while (connections.size > 0 && Date.now() < deadline) await sleep(20)
      for (const conn of connections) conn.transport.terminate()
    },

    /**
     * After shutdown: keeps serving the sessions held for resume (buffering,
     * handing over, forwarding) until they have all moved to other instances
     * or ended, within `budgetMs`. What is still held then is parked on the
     * mesh for whichever instance the peer resumes on; then this instance
     * stops receiving and leaves the mesh.
     */
    async drain (budgetMs: number): Promise<void> {
      // Waiting only helps when another instance can take the sessions over.
      const deadline = Date.now() + (await mesh.othersAlive().catch(() => false) ? budgetMs : 0)
      while ((registry.size > 0 || router.stats().waiting > 0) && Date.now() < deadline) await sleep(20)
      const leftovers = registry.all()
      await moves.parkAll(leftovers)
      await mesh.stop()
      // Whatever arrived until the subscription ended goes the same way.
      await moves.parkAll(leftovers)
      for (const session of leftovers) clearTimers(session)
      if (leftovers.length > 0) opts.log.info({ sessions: leftovers.length }, 'left sessions for resume on other instances')
      await mesh.leave(leftovers.length > 0)
    }
  }
}

/**
 * Slices of a heartbeat round: a tick every heartbeatMs / slices, at most 100
 * per round and no closer than 10 ms apart (25 s → one tick per 250 ms).
 */
export function heartbeatSlices (heartbeatMs: number): number {
  return Math.max(1, Math.min(100, Math.floor(heartbeatMs / 10)))
}

/**
 * Runs `tick` heartbeatSlices(heartbeatMs) times per heartbeatMs, following
 * the clock rather than chaining intervals, whose delays would add up over a
 * hundred ticks per round and stretch it (and the time to notice a dead
 * connection). Ticks a stall held back run at once, at most a round's worth.
 * Returns the stop function.
 */
export function startHeartbeat (clock: Clock, heartbeatMs: number, tick: () => void): () => void {
  const sliceMs = heartbeatMs / heartbeatSlices(heartbeatMs)
  let next = clock.now() + sliceMs
  let timer: TimerHandle | null = null
  const run = (): void => {
    const now = clock.now()
    if (now - next > heartbeatMs) next = now - heartbeatMs
    while (next <= now) {
      tick()
      next += sliceMs
    }
    timer = clock.setTimeout(run, next - now)
  }
  timer = clock.setTimeout(run, sliceMs)
  return () => {
    if (timer !== null) clock.clearTimeout(timer)
    timer = null
  }
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

export type SignalingHub = ReturnType<typeof createSignalingHub>
