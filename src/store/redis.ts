import { randomBytes } from 'node:crypto'
import type { RedisClient } from '../redis/client'
import type { JoinResult, RateLimitResult, Store, StoreLimits } from './types'
import { OVERFLOW_REF, REFERRER_TTL_S } from './types'
import {
  CLUSTER_BIND_PEER, CLUSTER_JOIN_ROOM, CLUSTER_LEAVE_ROOM, CLUSTER_OWN, CLUSTER_TOUCH_PEER, CLUSTER_TOUCH_ROOM, CLUSTER_UNBIND_PEER,
  CREATE_ROOM, JOIN_RATE_LIMIT, JOIN_ROOM, LEAVE_ROOM, TOUCH_ROOM, TRACK_REF, pairs, redisKeys
} from '../redis/keys'
import type { RedisLink } from '../redis/link'

/* The room data of protocol §4; key model and scripts in src/redis/keys.ts. */

// The last argument of every script is the write's deadline (RedisLink.deadline()).
type ScriptedRedis = RedisClient & {
  pdCreateRoom (room: string, sockets: string, peers: string, now: number, ttl: number, deadline: number): Promise<number>
  pdJoinRoom (room: string, sockets: string, binding: string, peers: string, session: string, owned: string, peerId: string, roomId: string, max: number, ttl: number, instance: string, secretHash: string, ownedTtl: number, deadline: number): Promise<[0, string] | [1, string[]]>
  pdLeaveRoom (room: string, sockets: string, binding: string, peers: string, session: string, peerId: string, roomId: string, emptyTtl: number, deadline: number): Promise<number>
  pdTouchRoom (numKeys: number, ...args: Array<string | number>): Promise<number>
  pdJoinRateLimit (key: string, now: number, windowMs: number, max: number, member: string, deadline: number): Promise<[number, number, number]>
  pdTrackRef (key: string, ref: string, max: number, ttl: number, overflow: string, deadline: number): Promise<number>
  // Redis Cluster: one slot per script (src/redis/keys.ts).
  pdcJoinRoom (room: string, sockets: string, peers: string, peerId: string, max: number, ttl: number, instance: string, deadline: number): Promise<[0, string] | [1, string[], number]>
  pdcBindPeer (binding: string, session: string, roomId: string, ttl: number, instance: string, secretHash: string, deadline: number): Promise<number>
  pdcUnbindPeer (binding: string, session: string, roomId: string, deadline: number): Promise<number>
  pdcLeaveRoom (room: string, sockets: string, peers: string, peerId: string, emptyTtl: number, deadline: number): Promise<[number, string[]]>
  pdcTouchRoom (room: string, sockets: string, peers: string, ttl: number, deadline: number): Promise<number>
  pdcTouchPeer (binding: string, session: string, roomId: string, ttl: number, deadline: number): Promise<number>
  pdcOwn (owned: string, peerId: string, ttl: number | '', deadline: number): Promise<number>
}

export interface RedisStoreOptions extends StoreLimits {
  redis: RedisClient
  /** Every operation goes through it: fails fast while Redis is not answering. */
  link: RedisLink
  keyPrefix: string
  /** TTL of this instance's peer set (instanceRecordTtlS). */
  ownedTtlS: number
  /** Redis Cluster: hash-tagged keys and one script per slot. */
  cluster?: boolean
}

/** Defines the scripts of the cluster's data model on a client (the store's and the mesh's). */
export function defineClusterCommands (redis: RedisClient): void {
  redis.defineCommand('pdcJoinRoom', { numberOfKeys: 3, lua: CLUSTER_JOIN_ROOM })
  redis.defineCommand('pdcBindPeer', { numberOfKeys: 2, lua: CLUSTER_BIND_PEER })
  redis.defineCommand('pdcUnbindPeer', { numberOfKeys: 2, lua: CLUSTER_UNBIND_PEER })
  redis.defineCommand('pdcLeaveRoom', { numberOfKeys: 3, lua: CLUSTER_LEAVE_ROOM })
  redis.defineCommand('pdcTouchRoom', { numberOfKeys: 3, lua: CLUSTER_TOUCH_ROOM })
  redis.defineCommand('pdcTouchPeer', { numberOfKeys: 2, lua: CLUSTER_TOUCH_PEER })
  redis.defineCommand('pdcOwn', { numberOfKeys: 1, lua: CLUSTER_OWN })
}

/** One day's referrer counts (also read by the export CLI, which needs no store). */
export async function readReferrerCounts (redis: RedisClient, keyPrefix: string, day: string, cluster = false): Promise<Record<string, number>> {
  const raw = await redis.hgetall(redisKeys(keyPrefix, cluster).referrersKey(day))
  return Object.fromEntries(Object.entries(raw).map(([ref, count]) => [ref, Number(count)]))
}

export function createRedisStore (opts: RedisStoreOptions): Store {
  const redis = opts.redis as ScriptedRedis
  redis.defineCommand('pdCreateRoom', { numberOfKeys: 3, lua: CREATE_ROOM })
  redis.defineCommand('pdJoinRoom', { numberOfKeys: 6, lua: JOIN_ROOM })
  redis.defineCommand('pdLeaveRoom', { numberOfKeys: 5, lua: LEAVE_ROOM })
  redis.defineCommand('pdTouchRoom', { lua: TOUCH_ROOM })
  redis.defineCommand('pdJoinRateLimit', { numberOfKeys: 1, lua: JOIN_RATE_LIMIT })
  redis.defineCommand('pdTrackRef', { numberOfKeys: 1, lua: TRACK_REF })
  const cluster = opts.cluster === true
  if (cluster) defineClusterCommands(redis)

  const p = opts.keyPrefix
  const { roomKey, socketsKey, peersKey, bindingKey, sessionKey, ownedKey, joinLimitKey, referrersKey } = redisKeys(p, cluster)

  /** Every backend failure becomes one typed error that Fastify answers with 503. */
  const guard = <T>(op: () => Promise<T>): Promise<T> => opts.link.run(op)
  const deadline = (): number => opts.link.deadline()

  /**
   * A join on a cluster: the room decides (exists, capacity) and records the
   * member, then the peer's binding and session follow, then the instance's
   * peer set. When a later step fails a member this join added is taken out
   * of the room again (best effort: a room member without a session is what a crash
   * between the steps could leave, and the room's TTL ends it).
   */
  async function clusterJoin (roomId: string, peerId: string, maxPeers: number, secretHash: string): Promise<JoinResult> {
    const reply = await redis.pdcJoinRoom(roomKey(roomId), socketsKey(roomId), peersKey(roomId), peerId, maxPeers, opts.roomTtlS, opts.instanceId, deadline())
    if (reply[0] !== 1) return { ok: false, code: reply[1] === 'room_full' ? 'room_full' : 'room_not_found' }
    try {
      await redis.pdcBindPeer(bindingKey(peerId), sessionKey(peerId), roomId, opts.roomTtlS, opts.instanceId, secretHash, deadline())
      if (secretHash !== '') await redis.pdcOwn(ownedKey(opts.instanceId), peerId, opts.ownedTtlS, deadline())
    } catch (err) {
      // Only a member this join added: a same-room rejoin keeps its membership.
      if (reply[2] === 1) await redis.pdcLeaveRoom(roomKey(roomId), socketsKey(roomId), peersKey(roomId), peerId, opts.roomEmptyTtlS, deadline()).catch(() => {})
      throw err
    }
    return { ok: true, members: pairs(reply[1]) }
  }

  /** A leave on a cluster: the peer's side first, so no binding outlives the membership. */
  async function clusterLeave (roomId: string, peerId: string): Promise<boolean> {
    await redis.pdcUnbindPeer(bindingKey(peerId), sessionKey(peerId), roomId, deadline())
    const [removed] = await redis.pdcLeaveRoom(roomKey(roomId), socketsKey(roomId), peersKey(roomId), peerId, opts.roomEmptyTtlS, deadline())
    return removed === 1
  }

  return {
    kind: 'redis',

    createRoom: (roomId) => guard(async () =>
      await redis.pdCreateRoom(roomKey(roomId), socketsKey(roomId), peersKey(roomId), Date.now(), opts.roomTtlS, deadline()) === 1),

    roomExists: (roomId) => guard(async () => await redis.exists(roomKey(roomId)) === 1),

    joinRoom: (roomId, peerId, maxPeers, secretHash = '') => guard(async (): Promise<JoinResult> => {
      if (cluster) return await clusterJoin(roomId, peerId, maxPeers, secretHash)
      const reply = await redis.pdJoinRoom(roomKey(roomId), socketsKey(roomId), bindingKey(peerId), peersKey(roomId), sessionKey(peerId), ownedKey(opts.instanceId), peerId, roomId, maxPeers, opts.roomTtlS, opts.instanceId, secretHash, opts.ownedTtlS, deadline())
      if (reply[0] === 1) return { ok: true, members: pairs(reply[1]) }
      return { ok: false, code: reply[1] === 'room_full' ? 'room_full' : 'room_not_found' }
    }),

    leaveRoom: (roomId, peerId) => guard(async () => cluster
      ? await clusterLeave(roomId, peerId)
      : await redis.pdLeaveRoom(roomKey(roomId), socketsKey(roomId), bindingKey(peerId), peersKey(roomId), sessionKey(peerId), peerId, roomId, opts.roomEmptyTtlS, deadline()) === 1),

    roomMembers: (roomId) => guard(() => redis.smembers(socketsKey(roomId))),

    peerRoom: (peerId) => guard(() => redis.get(bindingKey(peerId))),

    touchRooms: (occupied) => guard(async () => {
      if (occupied.length === 0) return
      if (cluster) {
        // A pipeline on a cluster must stay on one node: one script per slot, auto-pipelined per node instead.
        await Promise.all(occupied.flatMap(({ roomId, peerIds }) => [
          redis.pdcTouchRoom(roomKey(roomId), socketsKey(roomId), peersKey(roomId), opts.roomTtlS, deadline()),
          ...peerIds.map(id => redis.pdcTouchPeer(bindingKey(id), sessionKey(id), roomId, opts.roomTtlS, deadline()))
        ]))
        return
      }
      const pipeline = redis.pipeline() as unknown as ScriptedRedis
      for (const { roomId, peerIds } of occupied) {
        const keys = [roomKey(roomId), socketsKey(roomId), peersKey(roomId), ...peerIds.flatMap(id => [bindingKey(id), sessionKey(id)])]
        pipeline.pdTouchRoom(keys.length, ...keys, roomId, opts.roomTtlS, deadline())
      }
      const results = await (pipeline as unknown as ReturnType<RedisClient['pipeline']>).exec()
      const failed = results?.find(([err]) => err !== null)
      if (failed !== undefined) throw failed[0]
    }),

    hitJoinRateLimit: (ip) => guard(async (): Promise<RateLimitResult> => {
      const now = Date.now()
      const member = `${now}-${randomBytes(6).toString('base64url')}`
      const [allowed, remaining, oldest] = await redis.pdJoinRateLimit(joinLimitKey(ip), now, opts.joinLimitWindowMs, opts.joinLimitMax, member, deadline())
      if (allowed === 1) return { allowed: true, remaining, retryAfterS: 0 }
      return { allowed: false, remaining: 0, retryAfterS: Math.max(1, Math.ceil((oldest + opts.joinLimitWindowMs - now) / 1000)) }
    }),

    incrementReferrer: (day, ref) => guard(async () => {
      await redis.pdTrackRef(referrersKey(day), ref, opts.trackMaxRefsPerDay, REFERRER_TTL_S, OVERFLOW_REF, deadline())
    }),

    referrerCounts: (day) => guard(() => readReferrerCounts(redis, p, day, cluster)),

    ping: () => guard(async () => { await redis.ping() }),

    // The connection (and its link) belong to the plugin that created them.
    async close () {}
  }
}
