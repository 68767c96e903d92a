import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { JoinResult, Member, RateLimitResult, Store, StoreLimits } from './types'
import { REFERRER_TTL_S, StoreUnavailableError } from './types'

/*
 * Key model (protocol §4), every key under the configured prefix and with a TTL:
 *   room:<roomId>            hash { created_at }          ROOM_TTL_S from the last join
 *   room:<roomId>:sockets    set of member peerIds        same TTL as the room
 *   room:<roomId>:peers      hash peerId → instance id    same TTL as the room (routing)
 *   socket:<peerId>          string roomId                same TTL as the room
 *   session:<peerId>         hash { secret, room, instance }  see redis-cluster.ts
 *   ratelimit:join:<ip>      sorted set of attempt times  one window
 *   referrers:daily:<day>    hash ref → count             30 days
 * Check-and-write steps run as Lua scripts so concurrent instances cannot race.
 */

// KEYS: room, sockets, peers
const CREATE_ROOM = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'created_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1`

// KEYS: room, sockets, binding, peers, session, owned (instance:<id>:peers).
// ARGV: peerId, roomId, max, ttl, instance, secret hash ('' = keep none).
// Returns the members with their instances, so the joining instance learns
// where to route without asking again. The resume record is written here
// rather than at connect: only a peer in a room has anything to resume.
const JOIN_ROOM = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'room_not_found'} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return {0, 'room_full'}
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[4])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[5], 'secret', ARGV[6], 'room', ARGV[2], 'instance', ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[4])
  redis.call('SADD', KEYS[6], ARGV[1])
end
return {1, redis.call('HGETALL', KEYS[4])}`

// KEYS: room, sockets, binding, peers, session. ARGV: peerId, roomId, emptyTtl.
const LEAVE_ROOM = `
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HGET', KEYS[5], 'room') == ARGV[2] then redis.call('HSET', KEYS[5], 'room', '') end
local removed = redis.call('SREM', KEYS[2], ARGV[1])
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return removed`

// KEYS: room, sockets, peers, then socket:<peer> and session:<peer> for each
// local member. ARGV: roomId, ttl.
const TOUCH_ROOM = `
if redis.call('SCARD', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
for i = 4, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i + 1], ARGV[2])
  end
end
return 1`

// Sliding window: drop attempts older than the window, then admit or refuse.
const JOIN_RATE_LIMIT = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= max then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], window)
  return {0, 0, tonumber(oldest[2])}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return {1, max - count - 1, 0}`

interface ScriptedRedis extends Redis {
  pdCreateRoom (room: string, sockets: string, peers: string, now: number, ttl: number): Promise<number>
  pdJoinRoom (room: string, sockets: string, binding: string, peers: string, session: string, owned: string, peerId: string, roomId: string, max: number, ttl: number, instance: string, secretHash: string): Promise<[0, string] | [1, string[]]>
  pdLeaveRoom (room: string, sockets: string, binding: string, peers: string, session: string, peerId: string, roomId: string, emptyTtl: number): Promise<number>
  pdTouchRoom (numKeys: number, ...args: Array<string | number>): Promise<number>
  pdJoinRateLimit (key: string, now: number, windowMs: number, max: number, member: string): Promise<[number, number, number]>
}

/** Every key name of the Redis data model, under one prefix. */
export function redisKeys (prefix: string) {
  return {
    roomKey: (roomId: string) => `${prefix}room:${roomId}`,
    socketsKey: (roomId: string) => `${prefix}room:${roomId}:sockets`,
    peersKey: (roomId: string) => `${prefix}room:${roomId}:peers`,
    bindingKey: (peerId: string) => `${prefix}socket:${peerId}`,
    sessionKey: (peerId: string) => `${prefix}session:${peerId}`,
    /** The sessions an instance owns (for cleaning up after it). */
    ownedKey: (instance: string) => `${prefix}instance:${instance}:peers`
  }
}

/** HGETALL's flat [peerId, instance, …] reply as members. */
export function pairs (flat: string[]): Member[] {
  const members: Member[] = []
  for (let i = 0; i + 1 < flat.length; i += 2) members.push({ peerId: flat[i] as string, instance: flat[i + 1] as string })
  return members
}

export interface RedisStoreOptions extends StoreLimits {
  redis: Redis
  keyPrefix: string
}

export function createRedisStore (opts: RedisStoreOptions): Store {
  const redis = opts.redis as ScriptedRedis
  redis.defineCommand('pdCreateRoom', { numberOfKeys: 3, lua: CREATE_ROOM })
  redis.defineCommand('pdJoinRoom', { numberOfKeys: 6, lua: JOIN_ROOM })
  redis.defineCommand('pdLeaveRoom', { numberOfKeys: 5, lua: LEAVE_ROOM })
  redis.defineCommand('pdTouchRoom', { lua: TOUCH_ROOM })
  redis.defineCommand('pdJoinRateLimit', { numberOfKeys: 1, lua: JOIN_RATE_LIMIT })

  const p = opts.keyPrefix
  const { roomKey, socketsKey, peersKey, bindingKey, sessionKey, ownedKey } = redisKeys(p)

  /** Every backend failure becomes one typed error that Fastify answers with 503. */
  async function guard<T> (op: () => Promise<T>): Promise<T> {
    try {
      return await op()
    } catch (err) {
      throw new StoreUnavailableError({ cause: err })
    }
  }

  return {
    kind: 'redis',

    createRoom: (roomId) => guard(async () =>
      await redis.pdCreateRoom(roomKey(roomId), socketsKey(roomId), peersKey(roomId), Date.now(), opts.roomTtlS) === 1),

    roomExists: (roomId) => guard(async () => await redis.exists(roomKey(roomId)) === 1),

    joinRoom: (roomId, peerId, maxPeers, secretHash = '') => guard(async (): Promise<JoinResult> => {
      const reply = await redis.pdJoinRoom(roomKey(roomId), socketsKey(roomId), bindingKey(peerId), peersKey(roomId), sessionKey(peerId), ownedKey(opts.instanceId), peerId, roomId, maxPeers, opts.roomTtlS, opts.instanceId, secretHash)
      if (reply[0] === 1) return { ok: true, members: pairs(reply[1]) }
      return { ok: false, code: reply[1] === 'room_full' ? 'room_full' : 'room_not_found' }
    }),

    leaveRoom: (roomId, peerId) => guard(async () =>
      await redis.pdLeaveRoom(roomKey(roomId), socketsKey(roomId), bindingKey(peerId), peersKey(roomId), sessionKey(peerId), peerId, roomId, opts.roomEmptyTtlS) === 1),

    roomMembers: (roomId) => guard(() => redis.smembers(socketsKey(roomId))),

    peerRoom: (peerId) => guard(() => redis.get(bindingKey(peerId))),

    touchRooms: (occupied) => guard(async () => {
      if (occupied.length === 0) return
      const pipeline = redis.pipeline() as unknown as ScriptedRedis
      for (const { roomId, peerIds } of occupied) {
        const keys = [roomKey(roomId), socketsKey(roomId), peersKey(roomId), ...peerIds.flatMap(id => [bindingKey(id), sessionKey(id)])]
        pipeline.pdTouchRoom(keys.length, ...keys, roomId, opts.roomTtlS)
      }
      const results = await (pipeline as unknown as ReturnType<Redis['pipeline']>).exec()
      const failed = results?.find(([err]) => err !== null)
      if (failed !== undefined) throw failed[0]
    }),

    hitJoinRateLimit: (ip) => guard(async (): Promise<RateLimitResult> => {
      const now = Date.now()
      const member = `${now}-${randomBytes(6).toString('base64url')}`
      const [allowed, remaining, oldest] = await redis.pdJoinRateLimit(`${p}ratelimit:join:${ip}`, now, opts.joinLimitWindowMs, opts.joinLimitMax, member)
      if (allowed === 1) return { allowed: true, remaining, retryAfterS: 0 }
      return { allowed: false, remaining: 0, retryAfterS: Math.max(1, Math.ceil((oldest + opts.joinLimitWindowMs - now) / 1000)) }
    }),

    incrementReferrer: (day, ref) => guard(async () => {
      const key = `${p}referrers:daily:${day}`
      const results = await redis.multi().hincrby(key, ref, 1).expire(key, REFERRER_TTL_S).exec()
      const failed = results?.find(([err]) => err !== null)
      if (failed !== undefined) throw failed[0]
    }),

    referrerCounts: (day) => guard(async () => {
      const raw = await redis.hgetall(`${p}referrers:daily:${day}`)
      return Object.fromEntries(Object.entries(raw).map(([ref, count]) => [ref, Number(count)]))
    }),

    ping: () => guard(async () => { await redis.ping() }),

    // The connection belongs to the plugin that created it; it closes it.
    async close () {}
  }
}
