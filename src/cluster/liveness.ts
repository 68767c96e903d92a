import { randomBytes } from 'node:crypto'
import type { RedisClient } from '../redis/client'
import { INSTANCE_PROTOCOLS } from '../instance-protocol'
import { instanceRecordTtlS, type RedisKeys } from '../redis/keys'
import type { RedisLink } from '../redis/link'
import type { EndedSession } from '../signaling/mesh'
import type { Member } from '../store/types'
import type { Clock, TimerHandle } from '../clock'
import type { Logger } from '../signaling/types'
import type { FleetMarker } from './fleet-marker'

/*
 * Instance liveness: every instance writes a heartbeat into the `instances`
 * sorted set every deadAfterMs/3. One silent for deadAfterMs is dead (SIGKILL,
 * OOM, host loss, or a drain that left sessions behind): one survivor takes
 * the reap lock, waits the resume grace so the dead instance's peers can
 * resume elsewhere, then ends every session the dead instance still owns.
 *
 * Time comes from a Clock port (its `now` is what the heartbeat writes and
 * judges by, its timers run the beats and the graces), so the unit tests
 * drive it with a fake clock against a real Redis.
 */

/** What the Redis mesh and its liveness share. */
export interface MeshSettings {
  keyPrefix: string
  /** This instance's id on the mesh. */
  node: string
  sessionTtlS: number
  roomEmptyTtlS: number
  deadAfterMs: number
  resumeGraceMs: number
  log: Logger
  /** The command connection's circuit breaker: every call goes through it. */
  link: RedisLink
  /** Time and timers of the heartbeat and the reaping (default: the system clock). */
  clock?: Clock
}

export interface LivenessOptions extends MeshSettings {
  redis: RedisClient
  /** The key names (the layout's: hash-tagged on a cluster). */
  keys: RedisKeys
  /** Ends a session if `owner` still owns it (the mesh's endSession). */
  endSession: (peerId: string, owner: string) => Promise<{ roomId: string, remaining: Member[] } | null>
  /** Sessions of a dead instance that were ended after the grace: tell their rooms. */
  onSessionsEnded: (ended: EndedSession[]) => void
  /** Read back with every heartbeat: a changed marker means Redis lost its data. */
  marker: FleetMarker
  clock: Clock
}

export function createLiveness (opts: LivenessOptions) {
  const { redis, clock } = opts
  const { keys } = opts
  const spoken = INSTANCE_PROTOCOLS.join(',')
  const heartbeatMs = Math.max(100, Math.floor(opts.deadAfterMs / 3))
  const reapTimers = new Set<TimerHandle>()
  let beatTimer: TimerHandle | null = null
  let started = false
  let stopped = false
  /** Since when our own Redis link has been up: reaping waits a full window after an outage. */
  let healthySince: number | null = null
  /** Whether the last heartbeat saw another live instance, and which instances it saw alive. */
  let othersSeen = false
  let liveNodes: string[] = [opts.node]
  /** The instance protocols each instance advertised at the last heartbeat (none: version 1, as 1.0.0). */
  let advertised = new Map<string, number[]>()
  /** When this instance's record was last written, and the longest silence since the last ownership check. */
  let lastBeatAt = clock.now()
  let longestSilence = 0
  const onReady = (): void => { healthySince ??= clock.now() }
  const onClose = (): void => { healthySince = null }

  async function heartbeat (): Promise<void> {
    const now = clock.now()
    const ttlS = instanceRecordTtlS(opts)
    // GT: a beat delayed on a hung connection never overwrites a newer one.
    // (A transaction only within a slot: on a cluster the peer set is elsewhere.)
    const reply = await redis.multi().zadd(keys.instancesKey, 'GT', now, opts.node).expire(keys.instancesKey, ttlS)
      .zrangebyscore(keys.instancesKey, now - opts.deadAfterMs, '+inf').exec()
    const alive = reply?.[2]?.[1]
    othersSeen = Array.isArray(alive) && alive.some(node => node !== opts.node)
    liveNodes = Array.isArray(alive) ? alive.map(String) : [opts.node]
    longestSilence = Math.max(longestSilence, now - lastBeatAt)
    lastBeatAt = now
    await redis.expire(keys.ownedKey(opts.node), ttlS)
    await advertise(ttlS)
    await checkMarker(ttlS)
    // Only judge others once our own view has been continuous for a full
    // window: after an outage everyone's heartbeat is stale for a moment.
    if (healthySince === null || now - healthySince < opts.deadAfterMs) return
    const dead = await redis.zrangebyscore(keys.instancesKey, '-inf', now - opts.deadAfterMs)
    for (const instance of dead) {
      if (instance === opts.node) continue
      const lockMs = opts.resumeGraceMs + opts.deadAfterMs * 2
      const won = await redis.set(keys.reapKey(instance), opts.node, 'PX', lockMs, 'NX')
      if (won !== 'OK') continue
      opts.log.warn({ instance }, 'instance stopped heart-beating; its peers are ended after the resume grace unless they resume')
      const timer = clock.setTimeout(() => {
        reapTimers.delete(timer)
        opts.link.run(() => reap(instance)).catch((err: unknown) => opts.log.error({ err, instance }, 'reaping a dead instance failed; another instance will retry'))
      }, opts.resumeGraceMs)
      reapTimers.add(timer)
    }
  }

  /** Writes the instance protocols this instance speaks into its record, and reads everyone's. */
  async function advertise (ttlS: number): Promise<void> {
    const reply = await redis.multi().hset(keys.instanceProtocolsKey, opts.node, spoken).expire(keys.instanceProtocolsKey, ttlS)
      .hgetall(keys.instanceProtocolsKey).exec()
    const all = reply?.[2]?.[1]
    if (typeof all !== 'object' || all === null) return
    const next = new Map<string, number[]>()
    for (const [node, list] of Object.entries(all as Record<string, string>)) {
      next.set(node, list.split(',').map(Number).filter(v => Number.isInteger(v) && v > 0))
    }
    advertised = next
  }

  /** Writes the fleet marker if it is missing, and reads it back (fleet-marker.ts). */
  async function writeMarker (ttlS: number): Promise<string | null> {
    // A new value at every write: a marker re-created after a loss must never
    // equal the one it replaces, even when the same instance writes both.
    const fresh = `${opts.node}:${clock.now()}:${randomBytes(6).toString('base64url')}`
    const reply = await redis.multi().set(keys.fleetKey, fresh, 'EX', opts.sessionTtlS, 'NX').get(keys.fleetKey).expire(keys.fleetKey, Math.max(ttlS, opts.sessionTtlS)).exec()
    const current = reply?.[1]?.[1]
    return typeof current === 'string' ? current : null
  }

  async function checkMarker (ttlS: number): Promise<void> {
    opts.marker.check(await writeMarker(ttlS))
  }

  async function reap (instance: string): Promise<void> {
    // It may have come back meanwhile (it was frozen, or cut off from Redis): then it is not dead.
    const score = await redis.zscore(keys.instancesKey, instance)
    if (score !== null && Number(score) > clock.now() - opts.deadAfterMs) {
      await redis.del(keys.reapKey(instance))
      opts.log.info({ instance }, 'instance came back before its peers were ended; nothing reaped')
      return
    }
    const peerIds = await redis.smembers(keys.ownedKey(instance))
    const ended: EndedSession[] = []
    for (const peerId of peerIds) {
      const reply = await opts.endSession(peerId, instance)
      if (reply !== null && reply.roomId !== '') ended.push({ peerId, ...reply })
    }
    await Promise.all([redis.del(keys.ownedKey(instance)), redis.zrem(keys.instancesKey, instance), redis.hdel(keys.instanceProtocolsKey, instance), redis.del(keys.reapKey(instance))])
    opts.log.info({ instance, sessions: peerIds.length, inRooms: ended.length }, 'dead instance cleaned up')
    if (ended.length > 0) opts.onSessionsEnded(ended)
  }

  /** One heartbeat; resolves when it is done (a failure is left to the next one). */
  const beat = async (): Promise<void> => {
    if (stopped) return
    await opts.link.run(heartbeat).catch(() => { /* Redis down: the link logs it; the next beat retries */ })
  }
  /** Beats every heartbeatMs, whether or not the last beat has answered (a hung one must not stop the next). */
  const tick = (): void => {
    beatTimer = clock.setTimeout(tick, heartbeatMs)
    beat().catch(() => {})
  }

  return {
    /** Starts heart-beating (the first beat at once); a second call does nothing. */
    start (): void {
      if (started || stopped) return
      started = true
      healthySince = redis.status === 'ready' ? clock.now() : null
      lastBeatAt = clock.now()
      redis.on('ready', onReady)
      redis.on('close', onClose)
      tick()
    },

    get othersSeen (): boolean {
      return othersSeen
    },

    get liveNodes (): readonly string[] {
      return liveNodes
    },

    /**
     * The highest instance protocol this instance shares with `node`, from
     * what it advertised at the last heartbeat; 1 for an instance that
     * advertised nothing (1.0.0, or one not read yet).
     */
    protocolOf (node: string): number {
      const theirs = advertised.get(node)
      if (theirs === undefined) return 1
      let best = 1
      for (const version of theirs) if (version > best && INSTANCE_PROTOCOLS.includes(version)) best = version
      return best
    },

    /**
     * Whether this instance went silent for INSTANCE_DEAD_AFTER_MS or more
     * since the last call (frozen, cut off): only then may a survivor have
     * reaped it, and only then may a session record it misses have been
     * ended by someone else rather than lost by Redis.
     */
    takeSilence (): boolean {
      const silence = Math.max(longestSilence, clock.now() - lastBeatAt)
      longestSilence = 0
      return silence >= opts.deadAfterMs
    },

    /** A heartbeat now (after the link came back: it notices a Redis that lost its data at once). */
    beatNow: beat,

    /** Writes this instance's record and the marker after a restore; resolves with the marker to trust. */
    async rewrite (): Promise<string | null> {
      await heartbeat()
      return await writeMarker(instanceRecordTtlS(opts))
    },

    /**
     * Stops heart-beating. With sessions left behind, the instance is marked
     * dead at once, so a survivor ends whatever does not resume within the
     * grace; without, it simply leaves.
     */
    async stop (sessionsLeft: boolean): Promise<void> {
      stopped = true
      if (beatTimer !== null) clock.clearTimeout(beatTimer)
      beatTimer = null
      for (const t of reapTimers) clock.clearTimeout(t)
      reapTimers.clear()
      redis.off('ready', onReady)
      redis.off('close', onClose)
      await opts.link.run(async () => {
        if (sessionsLeft) await redis.zadd(keys.instancesKey, 0, opts.node)
        else await Promise.all([redis.zrem(keys.instancesKey, opts.node), redis.del(keys.ownedKey(opts.node)), redis.hdel(keys.instanceProtocolsKey, opts.node)])
      }).catch(() => {})
    }
  }
}
