import { randomBytes } from 'node:crypto'
import type { RedisClient } from '../redis/client'
import type { RateLimitResult, Store, StoreLimits } from './types'
import { OVERFLOW_REF, REFERRER_TTL_S } from './types'
import { redisKeys } from '../redis/keys'
import type { RedisLink } from '../redis/link'
import { createLayout } from '../redis/layouts'
import { createRoom, joinRateLimit, trackRef } from '../redis/scripts'

/*
 * The room data of protocol §4: key model in src/redis/keys.ts, scripts in
 * src/redis/scripts.ts, and the steps that span a room, a peer and an
 * instance in the layout (src/redis/layout.ts) for one Redis or a Cluster.
 */

export interface RedisStoreOptions extends StoreLimits {
  redis: RedisClient
  /** Every operation goes through it: fails fast while Redis is not answering. */
  link: RedisLink
  keyPrefix: string
  /** TTL of this instance's peer set (instanceRecordTtlS). */
  ownedTtlS: number
}

/** One day's referrer counts (also read by the export CLI, which needs no store). */
export async function readReferrerCounts (redis: RedisClient, keyPrefix: string, day: string, cluster = false): Promise<Record<string, number>> {
  return counts(await redis.hgetall(redisKeys(keyPrefix, cluster).referrersKey(day)))
}

const counts = (raw: Record<string, string>): Record<string, number> => Object.fromEntries(Object.entries(raw).map(([ref, count]) => [ref, Number(count)]))

export function createRedisStore (opts: RedisStoreOptions): Store {
  const { redis, link } = opts
  const layout = createLayout({ redis, keyPrefix: opts.keyPrefix, deadline: () => link.deadline() })
  const { keys, call } = layout

  /** Every backend failure becomes one typed error that Fastify answers with 503. */
  const guard = <T>(op: () => Promise<T>): Promise<T> => link.run(op)
  const deadline = (): number => link.deadline()

  return {
    kind: 'redis',

    createRoom: (roomId) => guard(() => call(createRoom,
      { room: keys.roomKey(roomId), sockets: keys.socketsKey(roomId), peers: keys.peersKey(roomId) },
      { createdAt: Date.now(), ttl: opts.roomTtlS, deadline: deadline() })),

    roomExists: (roomId) => guard(async () => await redis.exists(keys.roomKey(roomId)) === 1),

    joinRoom: (roomId, peerId, maxPeers, secretHash = '') => guard(() => layout.join({
      roomId, peerId, max: maxPeers, ttl: opts.roomTtlS, emptyTtl: opts.roomEmptyTtlS, instance: opts.instanceId, secretHash, ownedTtl: opts.ownedTtlS
    })),

    leaveRoom: (roomId, peerId) => guard(() => layout.leave({ roomId, peerId, emptyTtl: opts.roomEmptyTtlS })),

    roomMembers: (roomId) => guard(() => redis.smembers(keys.socketsKey(roomId))),

    peerRoom: (peerId) => guard(() => redis.get(keys.bindingKey(peerId))),

    touchRooms: (occupied) => guard(async () => {
      if (occupied.length > 0) await layout.touch({ occupied, ttl: opts.roomTtlS })
    }),

    hitJoinRateLimit: (ip) => guard(async (): Promise<RateLimitResult> => {
      const now = Date.now()
      const member = `${now}-${randomBytes(6).toString('base64url')}`
      const { allowed, remaining, oldest } = await call(joinRateLimit, { attempts: keys.joinLimitKey(ip) },
        { now, windowMs: opts.joinLimitWindowMs, max: opts.joinLimitMax, member, deadline: deadline() })
      if (allowed) return { allowed: true, remaining, retryAfterS: 0 }
      return { allowed: false, remaining: 0, retryAfterS: Math.max(1, Math.ceil((oldest + opts.joinLimitWindowMs - now) / 1000)) }
    }),

    incrementReferrer: (day, ref) => guard(() => call(trackRef, { referrers: keys.referrersKey(day) },
      { ref, max: opts.trackMaxRefsPerDay, ttl: REFERRER_TTL_S, overflow: OVERFLOW_REF, deadline: deadline() })),

    referrerCounts: (day) => guard(async () => counts(await redis.hgetall(keys.referrersKey(day)))),

    ping: () => guard(async () => { await redis.ping() }),

    // The connection (and its link) belong to the plugin that created them.
    async close () {}
  }
}
