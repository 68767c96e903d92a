import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { JoinResult, RateLimitResult, Store, StoreLimits } from './types'
import { REFERRER_TTL_S, unavailableOnFailure } from './types'
import { CREATE_ROOM, JOIN_RATE_LIMIT, JOIN_ROOM, LEAVE_ROOM, TOUCH_ROOM, pairs, redisKeys } from '../redis/keys'

/* The room data of protocol §4; key model and scripts in src/redis/keys.ts. */

interface ScriptedRedis extends Redis {
  pdCreateRoom (room: string, sockets: string, peers: string, now: number, ttl: number): Promise<number>
  pdJoinRoom (room: string, sockets: string, binding: string, peers: string, session: string, owned: string, peerId: string, roomId: string, max: number, ttl: number, instance: string, secretHash: string): Promise<[0, string] | [1, string[]]>
  pdLeaveRoom (room: string, sockets: string, binding: string, peers: string, session: string, peerId: string, roomId: string, emptyTtl: number): Promise<number>
  pdTouchRoom (numKeys: number, ...args: Array<string | number>): Promise<number>
  pdJoinRateLimit (key: string, now: number, windowMs: number, max: number, member: string): Promise<[number, number, number]>
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
  const { roomKey, socketsKey, peersKey, bindingKey, sessionKey, ownedKey, joinLimitKey, referrersKey } = redisKeys(p)

  /** Every backend failure becomes one typed error that Fastify answers with 503. */
  const guard = unavailableOnFailure

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
      const [allowed, remaining, oldest] = await redis.pdJoinRateLimit(joinLimitKey(ip), now, opts.joinLimitWindowMs, opts.joinLimitMax, member)
      if (allowed === 1) return { allowed: true, remaining, retryAfterS: 0 }
      return { allowed: false, remaining: 0, retryAfterS: Math.max(1, Math.ceil((oldest + opts.joinLimitWindowMs - now) / 1000)) }
    }),

    incrementReferrer: (day, ref) => guard(async () => {
      const key = referrersKey(day)
      const results = await redis.multi().hincrby(key, ref, 1).expire(key, REFERRER_TTL_S).exec()
      const failed = results?.find(([err]) => err !== null)
      if (failed !== undefined) throw failed[0]
    }),

    referrerCounts: (day) => guard(async () => {
      const raw = await redis.hgetall(referrersKey(day))
      return Object.fromEntries(Object.entries(raw).map(([ref, count]) => [ref, Number(count)]))
    }),

    ping: () => guard(async () => { await redis.ping() }),

    // The connection belongs to the plugin that created it; it closes it.
    async close () {}
  }
}
