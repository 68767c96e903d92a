import type { Redis } from 'ioredis'
import { pairs, redisKeys } from './redis'
import { StoreUnavailableError, type Member } from './types'

/*
 * What several instances on one Redis share beyond the room data:
 *
 *   instance:<id>            pub/sub channel of one instance (one subscription each)
 *   instances                sorted set: instance id → last heartbeat (ms)
 *   instance:<id>:peers      set of the peer ids whose sessions that instance owns
 *   session:<peerId>         hash { secret: sha256(resume secret), room, instance },
 *                            written by the join script (a peer in no room has nothing to resume)
 *   reap:<id>                lock: which live instance is cleaning up after a dead one
 *
 * Sessions outlive their connection so a peer can resume on any instance; the
 * owner field moves with it. When an instance stops heart-beating for
 * deadAfterMs, one survivor takes the reap lock, waits the resume grace, and
 * ends every session still owned by the dead instance.
 */

// Moves a session to a new owner if the caller knows its current secret hash.
// KEYS: session. ARGV: expected hash, new hash, new instance, key prefix, ttl.
// Returns { previous instance, room, flat room peers } or nil.
const CLAIM_SESSION = `
if redis.call('HGET', KEYS[1], 'secret') ~= ARGV[1] then return nil end
local previous = redis.call('HGET', KEYS[1], 'instance')
local room = redis.call('HGET', KEYS[1], 'room')
local peerId = string.sub(KEYS[1], #ARGV[4] + 9)
redis.call('HSET', KEYS[1], 'secret', ARGV[2], 'instance', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SREM', ARGV[4] .. 'instance:' .. previous .. ':peers', peerId)
redis.call('SADD', ARGV[4] .. 'instance:' .. ARGV[3] .. ':peers', peerId)
local members = {}
if room ~= '' then
  local peers = ARGV[4] .. 'room:' .. room .. ':peers'
  if redis.call('HEXISTS', peers, peerId) == 1 then
    redis.call('HSET', peers, peerId, ARGV[3])
    members = redis.call('HGETALL', peers)
  else
    room = ''
  end
end
return {previous, room, members}`

// Ends a session if `instance` still owns it; removes it from its room.
// KEYS: session. ARGV: instance (or '' for any), key prefix, empty-room ttl.
// Returns { room, flat remaining room peers } or nil when not owned.
const END_SESSION = `
local owner = redis.call('HGET', KEYS[1], 'instance')
if not owner or (ARGV[1] ~= '' and owner ~= ARGV[1]) then return nil end
local p = ARGV[2]
local peerId = string.sub(KEYS[1], #p + 9)
local room = redis.call('HGET', KEYS[1], 'room')
redis.call('DEL', KEYS[1])
redis.call('SREM', p .. 'instance:' .. owner .. ':peers', peerId)
if room == '' then return {'', {}} end
local sockets = p .. 'room:' .. room .. ':sockets'
local peers = p .. 'room:' .. room .. ':peers'
if redis.call('GET', p .. 'socket:' .. peerId) == room then redis.call('DEL', p .. 'socket:' .. peerId) end
redis.call('HDEL', peers, peerId)
if redis.call('SREM', sockets, peerId) == 1 and redis.call('SCARD', sockets) == 0 and redis.call('EXISTS', p .. 'room:' .. room) == 1 then
  redis.call('EXPIRE', p .. 'room:' .. room, ARGV[3])
end
return {room, redis.call('HGETALL', peers)}`

interface ClusterRedis extends Redis {
  pdClaimSession (session: string, expected: string, hash: string, instance: string, prefix: string, ttl: number): Promise<[string, string, string[]] | null>
  pdEndSession (session: string, instance: string, prefix: string, emptyTtl: number): Promise<[string, string[]] | null>
}

export interface SessionRecord { secret: string, room: string, instance: string }
export interface ClaimedSession { previousInstance: string, roomId: string | null, members: Member[] }
export interface EndedSession { peerId: string, roomId: string, remaining: Member[] }

export interface RedisClusterOptions {
  redis: Redis
  subscriber: Redis
  keyPrefix: string
  instanceId: string
  sessionTtlS: number
  roomEmptyTtlS: number
  deadAfterMs: number
  resumeGraceMs: number
  log: { info: (o: object, m: string) => void, warn: (o: object, m: string) => void, error: (o: object, m: string) => void }
  /** A payload published to this instance by another one. */
  onMessage: (payload: string) => void
  /** Sessions of a dead instance that were ended after the grace; tell their rooms. */
  onSessionsEnded: (ended: EndedSession[]) => void
}

export function createRedisCluster (opts: RedisClusterOptions) {
  const redis = opts.redis as ClusterRedis
  redis.defineCommand('pdClaimSession', { numberOfKeys: 1, lua: CLAIM_SESSION })
  redis.defineCommand('pdEndSession', { numberOfKeys: 1, lua: END_SESSION })

  const p = opts.keyPrefix
  const { sessionKey, ownedKey } = redisKeys(p)
  const channelOf = (instance: string) => `${p}instance:${instance}`
  const instancesKey = `${p}instances`
  const ownChannel = channelOf(opts.instanceId)
  const heartbeatMs = Math.max(100, Math.floor(opts.deadAfterMs / 3))
  const reapTimers = new Set<NodeJS.Timeout>()
  /** Since when our own Redis link has been up: reaping waits a full window after an outage. */
  let healthySince: number | null = null
  let stopped = false

  async function guard<T> (op: () => Promise<T>): Promise<T> {
    try {
      return await op()
    } catch (err) {
      throw new StoreUnavailableError({ cause: err })
    }
  }

  opts.subscriber.on('message', (channel: string, payload: string) => {
    if (channel === ownChannel) opts.onMessage(payload)
  })
  // Subscribe on every (re)connection: ioredis replays only subscriptions that
  // once succeeded, and a first attempt fails while Redis is unreachable.
  let subscribed = false
  const subscribe = (): void => {
    opts.subscriber.subscribe(ownChannel).then(() => { subscribed = true }, (err: unknown) => {
      opts.log.warn({ err }, 'could not subscribe to this instance\'s channel yet; retrying on reconnect')
    })
  }
  opts.subscriber.on('ready', subscribe)
  opts.subscriber.on('close', () => { subscribed = false })
  redis.on('ready', () => { healthySince ??= Date.now() })
  redis.on('close', () => { healthySince = null })
  if (redis.status === 'ready') healthySince = Date.now()

  async function heartbeat (): Promise<void> {
    const now = Date.now()
    const ttlS = Math.ceil(opts.deadAfterMs * 4 / 1000) + Math.ceil(opts.resumeGraceMs / 1000) + opts.sessionTtlS
    await redis.multi()
      .zadd(instancesKey, now, opts.instanceId)
      .expire(instancesKey, ttlS)
      .expire(ownedKey(opts.instanceId), ttlS)
      .exec()
    // Only judge others once our own view has been continuous for a full
    // window: after an outage everyone's heartbeat is stale for a moment.
    if (healthySince === null || now - healthySince < opts.deadAfterMs) return
    const dead = await redis.zrangebyscore(instancesKey, '-inf', now - opts.deadAfterMs)
    for (const instance of dead) {
      if (instance === opts.instanceId) continue
      const lockMs = opts.resumeGraceMs + opts.deadAfterMs * 2
      const won = await redis.set(`${p}reap:${instance}`, opts.instanceId, 'PX', lockMs, 'NX')
      if (won !== 'OK') continue
      opts.log.warn({ instance }, 'instance stopped heart-beating; its peers are ended after the resume grace unless they resume')
      const timer = setTimeout(() => {
        reapTimers.delete(timer)
        reap(instance).catch((err: unknown) => opts.log.error({ err, instance }, 'reaping a dead instance failed; another instance will retry'))
      }, opts.resumeGraceMs)
      reapTimers.add(timer)
    }
  }

  async function reap (instance: string): Promise<void> {
    const peerIds = await redis.smembers(ownedKey(instance))
    const ended: EndedSession[] = []
    for (const peerId of peerIds) {
      const reply = await redis.pdEndSession(sessionKey(peerId), instance, p, opts.roomEmptyTtlS)
      if (reply !== null && reply[0] !== '') ended.push({ peerId, roomId: reply[0], remaining: pairs(reply[1]) })
    }
    await redis.multi().del(ownedKey(instance)).zrem(instancesKey, instance).del(`${p}reap:${instance}`).exec()
    opts.log.info({ instance, sessions: peerIds.length, inRooms: ended.length }, 'dead instance cleaned up')
    if (ended.length > 0) opts.onSessionsEnded(ended)
  }

  const beat = (): void => {
    if (stopped) return
    heartbeat().catch(() => { /* Redis down: the client logs it; the next beat retries */ })
  }
  const timer = setInterval(beat, heartbeatMs)
  timer.unref()

  return {
    instanceId: opts.instanceId,

    async start (): Promise<void> {
      if (opts.subscriber.status === 'ready') {
        await opts.subscriber.subscribe(ownChannel).then(() => { subscribed = true }, () => {})
      }
      beat()
    },

    /** Whether this instance currently receives what others publish to it. */
    get subscribed (): boolean {
      return subscribed
    },

    /** Fire-and-forget for the caller, but failures surface (relay → `unavailable`). */
    publish: (instance: string, payload: string) => guard(async () => { await redis.publish(channelOf(instance), payload) }),

    /** The stored record, for checking a token (the caller compares in constant time). */
    readSession: (peerId: string) => guard(async (): Promise<SessionRecord | null> => {
      const record = await redis.hgetall(sessionKey(peerId))
      if (record['secret'] === undefined || record['instance'] === undefined) return null
      return { secret: record['secret'], room: record['room'] ?? '', instance: record['instance'] }
    }),

    /** Takes a session over (atomically, only while its secret is still `expectedHash`). */
    claimSession: (peerId: string, expectedHash: string, newHash: string) => guard(async (): Promise<ClaimedSession | null> => {
      const reply = await redis.pdClaimSession(sessionKey(peerId), expectedHash, newHash, opts.instanceId, p, opts.sessionTtlS)
      if (reply === null) return null
      return { previousInstance: reply[0], roomId: reply[1] === '' ? null : reply[1], members: pairs(reply[2]) }
    }),

    rotateSecret: (peerId: string, newHash: string) => guard(async () => {
      await redis.hset(sessionKey(peerId), 'secret', newHash)
    }),

    /**
     * Ends a session this instance owns (clean close, grace expired),
     * removing it from its room in the same step. Resolves false when there
     * was no record (the peer never joined a room).
     */
    endSession: (peerId: string) => guard(async () =>
      await redis.pdEndSession(sessionKey(peerId), opts.instanceId, p, opts.roomEmptyTtlS) !== null),

    /**
     * Graceful shutdown: the sessions stay in Redis for the resume grace and
     * this instance is marked dead at once, so a survivor ends whatever does
     * not resume elsewhere.
     */
    async handOff (): Promise<void> {
      stopped = true
      await redis.zadd(instancesKey, 0, opts.instanceId).catch(() => {})
    },

    async stop (): Promise<void> {
      stopped = true
      clearInterval(timer)
      for (const t of reapTimers) clearTimeout(t)
      reapTimers.clear()
      await opts.subscriber.unsubscribe(ownChannel).catch(() => {})
    }
  }
}

export type RedisCluster = ReturnType<typeof createRedisCluster>
