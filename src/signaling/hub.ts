import type { Store } from '../store/types'
import type { IceServer } from '../../schemas/rest'
import { RELAY_TYPES } from './bus'
import { Connection, ConnectionRegistry } from './connection'
import { createDelivery } from './delivery'
import { createDrain } from './drain'
import { createFaults } from './faults'
import { Forwards } from './forwards'
import { createHandlers } from './handlers'
import { heartbeatSlices, heartbeatTick } from './heartbeat'
import { createInbound } from './inbound'
import { createInputs } from './inputs'
import { LeaveRetries } from './leave-retries'
import { createLifecycle } from './lifecycle'
import { LogLimiter } from './log-limiter'
import { createMembership } from './membership'
import type { Mesh } from './mesh'
import { createMoves } from './moves'
import { createOutbound, type Outbound } from './outbound'
import { SessionRegistry } from './registry'
import { createRestLeave } from './rest-leave'
import { createRouter } from './router'
import { splitToken } from './tokens'
import { systemClock, type Clock, type ConnectionHandle, type HubLimits, type Logger, type SignalingMetrics, type Transport } from './types'

/*
 * The signaling core of one instance (docs/protocol.md §3), Fastify-free:
 * the /ws route hands each socket in as a Transport and forwards its events.
 * This module only wires the parts and offers the public API:
 *
 *   session      one peer's lifecycle state (the state machine)
 *   lifecycle    greeting, resuming, holding and ending sessions
 *   connection   rate limit, serial queue, why a socket ended
 *   registry     sessions and local room members
 *   delivery     to one peer, in order (its Inbox)
 *   outbound     replies, refusals, broadcasts, messages nobody waits on
 *   router       to peers on other instances
 *   moves        sessions changing instance (with forwards)
 *   inbound      messages from other instances
 *   handlers     the §3 rules of each client message
 *   membership   leaving a room (with leave-retries for the store's half)
 *   rest-leave   POST /api/leave_room, wherever the peer is served
 *   faults       the fence, ownership checks, eviction, an emptied registry
 *   heartbeat    pings in slices; drain: shutdown and leaving the fleet
 *
 * This instance is authoritative for its own peers' rooms: a relay checks the
 * sender's room here and the target's room where the target is served.
 */

export type { ConnectionHandle, HubLimits, Logger, SignalingMetrics, Transport } from './types'
export type { LeaveWithTokenResult } from './rest-leave'
export { heartbeatSlices, startHeartbeat } from './heartbeat'

export interface HubOptions {
  /** Only the join limiter: rooms and sessions are the mesh's. */
  store: Pick<Store, 'hitJoinRateLimit'>
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

export function createSignalingHub (opts: HubOptions) {
  const { store, mesh, limits, metrics, log } = opts
  const clock = opts.clock ?? systemClock
  const self = mesh.node
  const linkHealthy = opts.linkHealthy ?? (() => true)
  const countChanged = opts.countChanged ?? (() => {})
  const connections = new ConnectionRegistry(heartbeatSlices(limits.heartbeatMs))
  const warnings = new LogLimiter(clock)
  const forwards = new Forwards(clock)

  // Delivery, the router and outbound call each other (a refusal may wait
  // behind held frames; a held frame may be refused): `outbound` is only
  // called through these arrows, never while the three are being built.
  const delivery = createDelivery({
    clock,
    metrics,
    resumeBufferMax: limits.resumeBufferMax,
    resumeBufferBytes: limits.resumeBufferBytes,
    maxBufferedBytes: limits.maxBufferedBytes,
    warnings,
    undeliverable: env => outbound.undeliverable(env),
    outOfOrder: env => outbound.refuse(env, 'unavailable')
  })
  const router = createRouter({
    mesh,
    clock,
    metrics,
    log: log.child({ component: 'router' }),
    warnings,
    queueMax: Math.max(limits.resumeBufferMax, 1),
    deadlineMs: limits.rerouteDeadlineMs,
    orphaned (peerId, roomId, env) {
      const session = registry.get(peerId)
      if (session !== undefined && session.roomId === roomId) delivery.deliver(session, env)
      else outbound.undeliverable(env)
    },
    failed (env, unknown) {
      // `unavailable` promises "not applied": a publish that reached Redis and
      // then lost its answer may have been delivered, so it gets its own code.
      if (env.origin === self && RELAY_TYPES.has(env.type)) outbound.notify(env.from, unknown ? 'outcome_unknown' : 'unavailable', env.type, env.id)
    }
  })
  const registry = new SessionRegistry({ clock, log }, roomId => router.dropRoom(roomId), countChanged)
  const outbound: Outbound = createOutbound({ mesh, registry, forwards, router, delivery, clock, metrics, warnings, log })

  const retries = new LeaveRetries({ mesh, clock, isIn: (peerId, roomId) => registry.get(peerId)?.roomId === roomId })
  const membership = createMembership({ mesh, registry, outbound, retries, warnings })
  const moves = createMoves({ mesh, registry, delivery, router, forwards, clock, metrics, log, post: outbound.post, undeliverable: outbound.undeliverable, announce: outbound.announce })
  const restLeave = createRestLeave({ mesh, registry, leaveRoom: membership.leaveRoom, gone: moves.gone })
  const handlers = createHandlers({ store, warnings, limits, metrics, log, registry, router, mesh, delivery, outbound, leaveRoom: membership.leaveRoom, retries })
  const lifecycle = createLifecycle({
    ...{ mesh, registry, connections, delivery, moves, limits, metrics, warnings, log, linkHealthy, countChanged },
    iceServers: opts.iceServers,
    departed: membership.departed,
    drain: conn => handlers.drain(conn)
  })
  const faults = createFaults({ mesh, registry, connections, delivery, moves, clock, limits, warnings, log, linkHealthy })
  const { fence } = faults
  const onBus = createInbound({ self, registry, delivery, router, moves, forwards, post: outbound.post, undeliverable: outbound.undeliverable, refused: outbound.notify, leaveRoom: membership.leaveRoom })
  const drain = createDrain({ mesh, registry, connections, router, moves, clock, log })

  const inputs = createInputs({ fence, lifecycle, outbound, onMessage: handlers.onMessage, onBus })

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
      inputs.fenced('client', () => lifecycle.greet(conn, ctx))
      return inputs.handle(conn)
    },

    /** A message from another instance (behind the fence after a stall or a lost link). */
    onBus: inputs.bus,

    linkChanged: faults.linkChanged,
    accepting: faults.accepting,

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
    registryLost: faults.restoreRegistry,

    /** The live instance that holds the session a resume token names, when it is not this one. */
    async heldElsewhere (token: string): Promise<string | null> {
      const parts = splitToken(token)
      if (parts === null || registry.has(parts.peerId)) return null
      const record = await mesh.readSession(parts.peerId).catch(() => null)
      return record !== null && record.node !== self ? record.node : null
    },

    /** The instances seen alive at the last heartbeat (this one included). */
    liveNodes: (): readonly string[] => mesh.liveNodes,

    /** False while this instance cannot hear the other instances. */
    reachable: (): boolean => mesh.reachable,

    /** POST /api/leave_room: leave on behalf of a session that proves itself with its token. */
    leaveWithToken: restLeave.withToken,

    /** POST /api/leave_room with the old body (LEGACY_LEAVE_ROOM): on the peer id alone. */
    leaveByPeerId: restLeave.byPeerId,

    /** One slice of the heartbeat round (call every heartbeatMs / heartbeatSlices). */
    heartbeatTick (): void {
      heartbeatTick({ connections, fence, forwards })
    },

    /** A whole heartbeat round at once: every connection pinged (tests and tools). */
    heartbeat (): void {
      for (let i = 0; i < connections.slices; i++) heartbeatTick({ connections, fence, forwards })
    },

    /** Rooms this instance has members in, with those members (for TTL refresh). */
    occupiedRooms: (): Array<{ roomId: string, peerIds: string[] }> => registry.occupied(),

    stats () {
      return { connections: connections.size, sessions: registry.size, rooms: registry.roomCount, ...router.stats() }
    },

    /** Sessions held for resume (their connection dropped, within the grace). */
    heldSessions: (): number => registry.held,

    shutdown: drain.shutdown,

    /** After shutdown: serve what is held until it moved, park the rest, leave (drain.ts); leaves the store missed are not retried after it. */
    async drain (budgetMs: number): Promise<void> {
      await drain.drain(budgetMs)
      retries.stop()
    }
  }
}

export type SignalingHub = ReturnType<typeof createSignalingHub>
