import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import { createSignalingHub, startHeartbeat } from '../signaling/hub'
import { systemClock, type SignalingMetrics } from '../signaling/types'
import { createLocalMesh, type Mesh } from '../signaling/mesh'
import { createRedisMesh } from '../cluster/redis-mesh'
import { connectWithin, createRedisClient, type RedisClient } from '../redis/client'
import { createIceServers } from '../services/ice'
import { createConnectionCap, type ConnectionCap } from '../redis/connection-cap'
import type { ErrorCode } from '../../schemas/ws'
import { FastHistogram, batchedCounter } from '../services/hot-metrics'
import { CLOSE_REASONS, type CloseReason } from '../signaling/connection'

declare module 'fastify' {
  interface FastifyInstance {
    signaling: ReturnType<typeof createSignalingHub>
    /** MAX_CONNECTIONS_PER_IP across the fleet (Redis mode; null alone, where the per-instance count is the fleet's). */
    connectionCap: ConnectionCap | null
  }
}

/**
 * Owns the signaling hub of this instance: creates it, exports its metrics,
 * runs the heartbeat and room-refresh sweeps (one timer each, not one per
 * connection), and on close drains the sockets with 1001.
 */
export default fp(async (fastify) => {
  const { config, store } = fastify
  const registry = fastify.metrics.registry

  // Counted for every message: plain additions, handed to prom-client when /metrics is read.
  const countIn = batchedCounter({ name: 'privydrop_ws_messages_in_total', help: 'Inbound WebSocket messages by type', labelNames: ['type'] as const, registers: [registry] })
  const countOut = batchedCounter({ name: 'privydrop_ws_messages_out_total', help: 'Outbound WebSocket messages by type', labelNames: ['type'] as const, registers: [registry] })
  const countError = batchedCounter({ name: 'privydrop_ws_errors_total', help: 'Protocol errors reported to clients, by code', labelNames: ['code'] as const, registers: [registry] })
  const resumes = new Counter({ name: 'privydrop_ws_resumes_total', help: 'Sessions resumed with a resume token', registers: [registry] })
  const duplicates = new Counter({ name: 'privydrop_mesh_duplicates_total', help: 'Frames that reached a peer by a second path during a move and were dropped', registers: [registry] })
  const rerouted = new Counter({ name: 'privydrop_mesh_rerouted_total', help: 'Frames re-routed because the instance they were sent to had gone', registers: [registry] })
  const relayLatency = new FastHistogram({
    name: 'privydrop_relay_latency_seconds',
    help: 'Time from reading an offer/answer/candidate to handing it on: to the target socket (or its resume buffer) for path="local", to the cross-instance router for path="remote" (the hop to the other instance is not included)',
    labelNames: ['path'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [registry]
  })
  // Label sets resolved once: this runs for every relay.
  const localLatency = relayLatency.recorder({ path: 'local' })
  const remoteLatency = relayLatency.recorder({ path: 'remote' })
  // Every label value is exported from the start (at 0), so rate() and alerts see a series before the first event.
  const closes = new Counter({
    name: 'privydrop_ws_closes_total',
    help: 'WebSocket connections ended, by reason: client (a clean close by the client), dropped (no clean close: network loss), or the server\'s heartbeat (two pongs missed), shutdown, evicted (cut off from Redis), replaced (resumed on another connection), abuse, oversize',
    labelNames: ['reason'] as const,
    registers: [registry]
  })
  for (const reason of CLOSE_REASONS) closes.inc({ reason }, 0)
  const moves = new Counter({
    name: 'privydrop_sessions_moved_total',
    help: 'Sessions that changed instance: direction="in" taken over here by a resume from another instance, "out" handed to the instance it resumed on',
    labelNames: ['direction'] as const,
    registers: [registry]
  })
  for (const direction of ['in', 'out'] as const) moves.inc({ direction }, 0)
  const metrics: SignalingMetrics = {
    messageIn: countIn,
    messageOut: countOut,
    error: (code: ErrorCode) => countError(code),
    relayLatency: (seconds, path) => (path === 'local' ? localLatency : remoteLatency)(seconds),
    resume: () => resumes.inc(),
    duplicate: () => duplicates.inc(),
    rerouted: () => rerouted.inc(),
    closed: (reason: CloseReason) => closes.inc({ reason }),
    moved: (direction) => moves.inc({ direction })
  }

  // Redis mode: a second connection for subscribing (a subscribed ioredis
  // connection cannot run commands) and the mesh on top. Alone: a LocalMesh.
  const node = fastify.lifecycle.instanceId
  let mesh: Mesh
  let subscriber: RedisClient | undefined
  if (fastify.redis !== null && fastify.redisLink !== null) {
    subscriber = createRedisClient(config, fastify.log, 'subscriber')
    await connectWithin(subscriber, config.REDIS_CONNECT_TIMEOUT_MS).catch(() => { /* it keeps retrying; /ready reports the store */ })
    mesh = createRedisMesh({
      rooms: store,
      redis: fastify.redis,
      link: fastify.redisLink,
      subscriber,
      keyPrefix: config.KEY_PREFIX,
      node,
      sessionTtlS: config.ROOM_TTL_S,
      roomEmptyTtlS: config.ROOM_EMPTY_TTL_S,
      deadAfterMs: config.INSTANCE_DEAD_AFTER_MS,
      resumeGraceMs: config.RESUME_GRACE_MS,
      log: fastify.log.child({ component: 'mesh' })
    })
  } else {
    mesh = createLocalMesh(store, node)
  }

  const hub = createSignalingHub({
    store,
    mesh,
    log: fastify.log.child({ component: 'signaling' }),
    metrics,
    iceServers: createIceServers(config),
    linkHealthy: () => fastify.redisLink?.healthy ?? true,
    countChanged: (ip) => cap?.changed(ip),
    limits: {
      maxPeers: config.ROOM_MAX_PEERS,
      joinRateLimit: !config.DISABLE_JOIN_RATE_LIMIT,
      ratePerS: config.WS_RATE_PER_S,
      rateBurst: config.WS_RATE_BURST,
      abuseMaxDrops: config.WS_ABUSE_MAX_DROPS,
      maxBufferedBytes: config.WS_MAX_BUFFERED_BYTES,
      heartbeatMs: config.HEARTBEAT_MS,
      resumeGraceMs: config.RESUME_GRACE_MS,
      resumeBufferMax: config.RESUME_BUFFER_MAX,
      resumeBufferBytes: config.RESUME_BUFFER_BYTES,
      maxQueued: config.WS_MAX_QUEUED_MESSAGES,
      // A vanished instance's peers are ended by a survivor within dead-after
      // (plus a heartbeat) and the grace; frames for them wait that long.
      rerouteDeadlineMs: config.INSTANCE_DEAD_AFTER_MS * 2 + config.RESUME_GRACE_MS + 2000,
      // Alone, nobody else can claim a session or take a client: nothing to fence or evict for.
      stallCheckMs: subscriber === undefined ? 0 : config.STALL_CHECK_MS,
      evictAfterMs: subscriber === undefined ? 0 : config.REDIS_EVICT_AFTER_MS
    }
  })
  fastify.decorate('signaling', hub)
  const cap: ConnectionCap | null = fastify.redis === null || fastify.redisLink === null
    ? null
    : createConnectionCap({
      redis: fastify.redis,
      link: fastify.redisLink,
      keyPrefix: config.KEY_PREFIX,
      node,
      max: config.MAX_CONNECTIONS_PER_IP,
      // Rewritten on every change; a share outlives a crash until the key's last writer is long gone.
      ttlS: Math.max(60, Math.ceil(config.RESUME_GRACE_MS / 1000) + Math.ceil(config.INSTANCE_DEAD_AFTER_MS / 1000) * 4),
      liveNodes: () => hub.liveNodes(),
      localCount: (ip, token) => hub.connectionsFrom(ip, token),
      heldElsewhere: (token) => hub.heldElsewhere(token),
      log: fastify.log.child({ component: 'connection-cap' })
    })
  fastify.decorate('connectionCap', cap)
  const stopCap = cap?.start()
  const stopWatchdog = hub.startWatchdog()
  const unwatchLink = fastify.redisLink?.onChange(healthy => hub.linkChanged(healthy))
  if (fastify.redisLink !== null && !fastify.redisLink.healthy) hub.linkChanged(false)
  if (subscriber !== undefined && config.REDIS_EVICT_AFTER_MS >= config.INSTANCE_DEAD_AFTER_MS) {
    fastify.log.warn({ REDIS_EVICT_AFTER_MS: config.REDIS_EVICT_AFTER_MS, INSTANCE_DEAD_AFTER_MS: config.INSTANCE_DEAD_AFTER_MS }, 'REDIS_EVICT_AFTER_MS is not under INSTANCE_DEAD_AFTER_MS: a cut-off instance may be reaped before its clients move')
  }

  const gauges: Array<[string, string, () => number]> = [
    ['privydrop_ws_connections', 'Open WebSocket connections', () => hub.stats().connections],
    ['privydrop_ws_sessions', 'Peer sessions, including ones held for resume', () => hub.stats().sessions],
    ['privydrop_ws_sessions_held', 'Peer sessions held for resume (their connection dropped; RESUME_GRACE_MS)', () => hub.heldSessions()],
    ['privydrop_rooms_active', 'Rooms with members on this instance', () => hub.stats().rooms]
  ]
  for (const [name, help, read] of gauges) {
    registry.registerMetric(new Gauge({ name, help, registers: [], collect () { this.set(read()) } }))
  }
  const link = fastify.redisLink
  if (link !== null) {
    registry.registerMetric(new Gauge({
      name: 'privydrop_redis_up',
      help: 'Redis mode: 1 while the connection works: connection="commands" its circuit is closed (Redis answers commands and health checks), "subscriber" subscribed to this instance\'s channel (it hears the other instances)',
      labelNames: ['connection'] as const,
      registers: [],
      collect () {
        this.set({ connection: 'commands' }, link.healthy ? 1 : 0)
        this.set({ connection: 'subscriber' }, hub.reachable() ? 1 : 0)
      }
    }))
  }

  // The round is spread over slices (see ConnectionRegistry and startHeartbeat):
  // each connection is still pinged every HEARTBEAT_MS.
  const stopHeartbeat = startHeartbeat({ ...systemClock, now: () => performance.now() }, config.HEARTBEAT_MS, () => hub.heartbeatTick())
  // Occupied rooms never expire: refresh their TTLs well inside ROOM_TTL_S.
  const touchEveryMs = Math.min(60_000, Math.max(250, Math.floor(config.ROOM_TTL_S * 1000 / 3)))
  const touch = setInterval(() => {
    store.touchRooms(hub.occupiedRooms()).catch((err: unknown) => {
      fastify.log.warn({ err }, 'could not refresh room TTLs')
    })
  }, touchEveryMs)
  touch.unref()

  fastify.addHook('preClose', async () => {
    stopHeartbeat()
    stopWatchdog()
    stopCap?.()
    unwatchLink?.()
    clearInterval(touch)
    const closeWaitMs = Math.min(2000, Math.floor(config.SHUTDOWN_TIMEOUT_MS / 4))
    await hub.shutdown(closeWaitMs)
    // Serve the held sessions until their peers have resumed elsewhere, within
    // what is left of the shutdown budget (a second stays for closing).
    await hub.drain(Math.max(0, config.SHUTDOWN_TIMEOUT_MS - closeWaitMs - 1000))
    await subscriber?.quit().catch(() => subscriber?.disconnect())
  })
  await mesh.start({
    message: (msg) => hub.onBus(msg),
    sessionsEnded: (ended) => hub.peersGone(ended),
    registryLost: () => hub.registryLost()
  })
}, { name: 'signaling', fastify: '5.x', dependencies: ['config', 'store', 'metrics', 'lifecycle'] })
