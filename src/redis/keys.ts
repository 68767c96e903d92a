import type { Member } from '../store/types'

/*
 * Key model (protocol §4), every key under the configured prefix and with a TTL:
 *   room:<roomId>            hash { created_at }          ROOM_TTL_S from the last join
 *   room:<roomId>:sockets    set of member peerIds        same TTL as the room
 *   room:<roomId>:peers      hash peerId → instance id    same TTL as the room (routing)
 *   socket:<peerId>          string roomId                same TTL as the room
 *   session:<peerId>         hash { secret, room, instance, epoch }: a peer's resumable session
 *                            (SHA-256 of its resume secret, its room, the instance serving it,
 *                            how often it moved); written by the join script
 *   session:<peerId>:parked  list of JSON handovers: frames an exiting instance left for the
 *                            peer, taken by the claim on whichever instance it resumes on
 *   instance:<id>            pub/sub channel of one instance (not a key)
 *   instances                sorted set: instance id → last heartbeat (ms)
 *   instance:<id>:peers      set of the peer ids whose sessions that instance owns (TTL set
 *                            with every addition, refreshed by the heartbeat)
 *   reap:<id>                lock: which live instance cleans up after a dead one
 *   fleet                    string: a marker written once (NX) and refreshed by every
 *                            heartbeat; a different value means Redis lost its data (a
 *                            restart without persistence, a failover to an empty replica,
 *                            a FLUSHALL), so a missing record then proves nothing
 *   ratelimit:join:<ip>      sorted set of attempt times  one window
 *   ratelimit:api:<ip>       counter of REST requests     one window (API_RATE_LIMIT_WINDOW_S)
 *   conns:<ip>               hash instance id → that instance's connections and held sessions
 *                            from the IP (MAX_CONNECTIONS_PER_IP across the fleet); only live
 *                            instances' shares count, so a dead one's share lapses with it
 *   referrers:daily:<day>    hash ref → count             30 days; at most TRACK_MAX_REFS_PER_DAY
 *                            refs, later ones counted under `other`
 * Check-and-write steps run as Lua scripts so concurrent instances cannot race.
 * Every write script starts with FRESH: its last argument is the caller's
 * deadline in Redis's clock (src/redis/link.ts), so a write that reaches a
 * hung Redis and runs after it wakes up, when its caller was long told
 * "unavailable", does nothing.
 */

/** Refuses to run past the deadline in ARGV[#ARGV] (ms, Redis clock). */
const FRESH = `do
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[#ARGV]) then
    return redis.error_reply('EXPIRED write arrived after its deadline')
  end
end
`
const fresh = (body: string): string => FRESH + body.trimStart()

// KEYS: room, sockets, peers
export const CREATE_ROOM = fresh(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'created_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1`)

// KEYS: room, sockets, binding, peers, session, owned (instance:<id>:peers).
// ARGV: peerId, roomId, max, ttl, instance, secret hash ('' = keep none),
// TTL of the instance's peer set, deadline.
// Returns the members with their instances, so the joining instance learns
// where to route without asking again. The resume record is written here
// rather than at connect: only a peer in a room has anything to resume.
export const JOIN_ROOM = fresh(`
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
  redis.call('EXPIRE', KEYS[6], ARGV[7])
end
return {1, redis.call('HGETALL', KEYS[4])}`)

// KEYS: room, sockets, binding, peers, session. ARGV: peerId, roomId, emptyTtl.
export const LEAVE_ROOM = fresh(`
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HGET', KEYS[5], 'room') == ARGV[2] then redis.call('HSET', KEYS[5], 'room', '') end
local removed = redis.call('SREM', KEYS[2], ARGV[1])
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return removed`)

// KEYS: room, sockets, peers, then socket:<peer> and session:<peer> for each
// local member. ARGV: roomId, ttl.
export const TOUCH_ROOM = fresh(`
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
return 1`)

// Sliding window: drop attempts older than the window, then admit or refuse.
export const JOIN_RATE_LIMIT = fresh(`
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
return {1, max - count - 1, 0}`)

// --- sessions across instances (src/cluster) ---

// Moves a session to a new owner if the caller knows its current secret hash,
// and takes what an exited owner parked for the peer.
// KEYS: session, parked. ARGV: expected hash, new hash, new instance, key prefix, ttl, peerId,
// TTL of the instance's peer set, deadline.
// Returns { previous instance, room, flat room peers, epoch, parked handovers } or nil.
export const CLAIM_SESSION = fresh(`
if redis.call('HGET', KEYS[1], 'secret') ~= ARGV[1] then return nil end
local previous = redis.call('HGET', KEYS[1], 'instance')
local room = redis.call('HGET', KEYS[1], 'room')
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local peerId = ARGV[6]
redis.call('HSET', KEYS[1], 'secret', ARGV[2], 'instance', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SREM', ARGV[4] .. 'instance:' .. previous .. ':peers', peerId)
redis.call('SADD', ARGV[4] .. 'instance:' .. ARGV[3] .. ':peers', peerId)
redis.call('EXPIRE', ARGV[4] .. 'instance:' .. ARGV[3] .. ':peers', ARGV[7])
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
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
return {previous, room, members, epoch, parked}`)

// Ends a session if `instance` owns it; removes it from its room.
// KEYS: session, parked. ARGV: instance, key prefix, empty-room ttl, peerId.
// Returns { room, flat remaining room peers } or nil when not owned.
export const END_SESSION = fresh(`
local owner = redis.call('HGET', KEYS[1], 'instance')
if not owner or owner ~= ARGV[1] then return nil end
local p = ARGV[2]
local peerId = ARGV[4]
local room = redis.call('HGET', KEYS[1], 'room')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', p .. 'instance:' .. owner .. ':peers', peerId)
if room == '' then return {'', {}} end
local sockets = p .. 'room:' .. room .. ':sockets'
local peers = p .. 'room:' .. room .. ':peers'
if redis.call('GET', p .. 'socket:' .. peerId) == room then redis.call('DEL', p .. 'socket:' .. peerId) end
redis.call('HDEL', peers, peerId)
if redis.call('SREM', sockets, peerId) == 1 and redis.call('SCARD', sockets) == 0 and redis.call('EXISTS', p .. 'room:' .. room) == 1 then
  redis.call('EXPIRE', p .. 'room:' .. room, ARGV[3])
end
return {room, redis.call('HGETALL', peers)}`)

// Parks a handover for a peer whose session `owner` still owns.
// KEYS: session, parked. ARGV: owner, ttl, handover JSON.
// Returns the session's owner (the caller compares), or nil when the session is over.
export const PARK_HANDOVER = fresh(`
local owner = redis.call('HGET', KEYS[1], 'instance')
if not owner then return nil end
if owner == ARGV[1] then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return owner`)

// A new resume secret for a session that still exists (a session record
// lost with Redis's data is not re-created, and so never lacks a TTL).
// KEYS: session. ARGV: new hash, deadline. Returns 1 when recorded.
export const ROTATE_SECRET = fresh(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'secret', ARGV[1])
return 1`)

// Counts a referrer for a day; past `max` distinct refs, new ones count under the overflow field.
// KEYS: referrers. ARGV: ref, max, ttl, overflow field, deadline.
export const TRACK_REF = fresh(`
local field = ARGV[1]
if redis.call('HEXISTS', KEYS[1], field) == 0 then
  local distinct = redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], ARGV[4])
  if distinct >= tonumber(ARGV[2]) then field = ARGV[4] end
end
redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1`)

// --- Rebuilding after Redis lost its data (each script within one slot) -----
//
// Every instance rewrites what it still serves: its sessions and their room
// memberships. A record another instance wrote meanwhile wins.

// KEYS: session, binding. ARGV: secret hash, roomId ('' = none), instance, epoch, ttl, deadline.
// Returns 1 when written, 0 when another instance owns the session now.
export const RESTORE_SESSION = fresh(`
local owner = redis.call('HGET', KEYS[1], 'instance')
if owner and owner ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'room', ARGV[2], 'instance', ARGV[3])
if tonumber(ARGV[4]) > tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5]) end
return 1`)

// KEYS: room, sockets, peers. ARGV: peerId, instance, ttl, created_at, deadline.
export const RESTORE_MEMBER = fresh(`
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1`)

// Admits one more connection from a client IP if the live instances' shares
// (its own excluded, then counted as `mine`) leave room under the cap, and
// records `mine` as this instance's share. A resume of a session held on
// another instance discounts that instance's share by one (it is moving here).
// KEYS: conns:<ip>. ARGV: self, cap, mine (with the new one), ttl, discounted instance ('' none), live instances..., deadline.
// Returns -1 when admitted, else the other instances' count.
export const ADMIT_CONNECTION = fresh(`
local others = 0
for i = 6, #ARGV - 1 do
  if ARGV[i] ~= ARGV[1] then
    local n = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
    if ARGV[i] == ARGV[5] and n > 0 then n = n - 1 end
    others = others + n
  end
end
if others + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return others end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return -1`)

// A fixed-window request counter (the REST limiter): the count, and the
// window's remaining milliseconds. Not deadline-checked: a late increment
// only counts a request that did happen. KEYS: counter. ARGV: window ms.
export const COUNT_REQUEST = `
local current = redis.call('INCR', KEYS[1])
if current == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {current, tonumber(ARGV[1])}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}`

/** The ioredis command that runs PUBLISH_FRESH (it bypasses auto-pipelining: see src/redis/client.ts). */
export const PUBLISH_COMMAND = 'pdPublish'

// PUBLISH behind the deadline check: a relay reported unavailable is never published later.
// Several messages to one channel in one call (one script run and one deadline
// check for the batch), each still its own PUBLISH, in order.
// KEYS: channel (declared as a key so a cluster routes it). ARGV: payload…, deadline.
// Returns the receiver count, as PUBLISH does (the same for every message of the batch).
export const PUBLISH_FRESH = fresh(`
local receivers = 0
for i = 1, #ARGV - 1 do receivers = redis.call('PUBLISH', KEYS[1], ARGV[i]) end
return receivers`)

/**
 * Every key name of the Redis data model, under one prefix. On Redis Cluster
 * the names carry hash tags, so that the keys one script touches share a
 * slot: a room's three keys hash on the room id, a peer's binding, session
 * and parked handovers on the peer id, an instance's peer set and channel on
 * the instance id. On one Redis the names stay as they are.
 */
export function redisKeys (prefix: string, cluster = false) {
  const tag = cluster ? (id: string) => `{${id}}` : (id: string) => id
  return {
    roomKey: (roomId: string) => `${prefix}room:${tag(roomId)}`,
    socketsKey: (roomId: string) => `${prefix}room:${tag(roomId)}:sockets`,
    peersKey: (roomId: string) => `${prefix}room:${tag(roomId)}:peers`,
    bindingKey: (peerId: string) => `${prefix}socket:${tag(peerId)}`,
    sessionKey: (peerId: string) => `${prefix}session:${tag(peerId)}`,
    parkedKey: (peerId: string) => `${prefix}session:${tag(peerId)}:parked`,
    /** The sessions an instance owns (for cleaning up after it). */
    ownedKey: (instance: string) => `${prefix}instance:${tag(instance)}:peers`,
    /** Sharded pub/sub on a cluster: the channel lives on its instance's slot. */
    channel: (instance: string) => `${prefix}instance:${tag(instance)}`,
    instancesKey: `${prefix}instances`,
    /** The fleet's marker: a value that changes only when Redis lost its data. */
    fleetKey: `${prefix}fleet`,
    reapKey: (instance: string) => `${prefix}reap:${instance}`,
    joinLimitKey: (ip: string) => `${prefix}ratelimit:join:${ip}`,
    /** Per client IP: each instance's count of its connections and held sessions (the fleet-wide cap). */
    connectionsKey: (ip: string) => `${prefix}conns:${ip}`,
    /** The REST limiter's counters: the namespace its store prefixes client keys with. */
    apiLimitNamespace: `${prefix}ratelimit:api:`,
    referrersKey: (day: string) => `${prefix}referrers:daily:${day}`
  }
}

// --- Redis Cluster: one slot per script ---------------------------------------
//
// On a cluster a script may only touch keys of one slot, so the steps that
// span a room, a peer and an instance on one Redis run there as one script
// per slot, in an order that leaves nothing a reader would act on when a
// later step fails (src/store/redis.ts and src/cluster/redis-mesh.ts say how).

// KEYS: room, sockets, peers. ARGV: peerId, max, ttl, instance, deadline.
// Returns {1, flat peers, 1 if the peer was not a member before} or {0, code}.
export const CLUSTER_JOIN_ROOM = fresh(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'room_not_found'} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return {0, 'room_full'}
end
local added = redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {1, redis.call('HGETALL', KEYS[3]), added}`)

// KEYS: binding, session. ARGV: roomId, ttl, instance, secret hash ('' = keep none), deadline.
export const CLUSTER_BIND_PEER = fresh(`
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'secret', ARGV[4], 'room', ARGV[1], 'instance', ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1`)

// KEYS: binding, session. ARGV: roomId, deadline. The peer's side of a leave.
export const CLUSTER_UNBIND_PEER = fresh(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], 'room') == ARGV[1] then redis.call('HSET', KEYS[2], 'room', '') end
return 1`)

// KEYS: room, sockets, peers. ARGV: peerId, emptyTtl, deadline.
// Returns { removed, flat remaining peers }.
export const CLUSTER_LEAVE_ROOM = fresh(`
redis.call('HDEL', KEYS[3], ARGV[1])
local removed = redis.call('SREM', KEYS[2], ARGV[1])
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {removed, redis.call('HGETALL', KEYS[3])}`)

// KEYS: room, sockets, peers. ARGV: ttl, deadline.
export const CLUSTER_TOUCH_ROOM = fresh(`
if redis.call('SCARD', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1`)

// KEYS: binding, session. ARGV: roomId, ttl, deadline.
export const CLUSTER_TOUCH_PEER = fresh(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1`)

// KEYS: owned. ARGV: peerId, ttl ('' = remove), deadline.
export const CLUSTER_OWN = fresh(`
if ARGV[2] == '' then return redis.call('SREM', KEYS[1], ARGV[1]) end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1`)

// The session's side of a claim. KEYS: session, parked.
// ARGV: expected hash, new hash, new instance, ttl, deadline.
// Returns { previous instance, room, epoch, parked handovers } or nil.
export const CLUSTER_CLAIM_SESSION = fresh(`
if redis.call('HGET', KEYS[1], 'secret') ~= ARGV[1] then return nil end
local previous = redis.call('HGET', KEYS[1], 'instance')
local room = redis.call('HGET', KEYS[1], 'room')
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'secret', ARGV[2], 'instance', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return {previous, room, epoch, parked}`)

// The room's side of a claim. KEYS: peers. ARGV: peerId, instance, deadline.
// Returns the flat room peers, or nil when the peer is no longer a member.
export const CLUSTER_CLAIM_ROOM = fresh(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return nil end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])`)

// The session's side of ending it. KEYS: session, parked, binding.
// ARGV: instance, deadline. Returns the room ('' for none), or nil when not owned.
export const CLUSTER_END_SESSION = fresh(`
local owner = redis.call('HGET', KEYS[1], 'instance')
if not owner or owner ~= ARGV[1] then return nil end
local room = redis.call('HGET', KEYS[1], 'room')
redis.call('DEL', KEYS[1], KEYS[2])
if room ~= '' and redis.call('GET', KEYS[3]) == room then redis.call('DEL', KEYS[3]) end
return room`)

// SPUBLISH behind the deadline check (sharded pub/sub: only the channel's shard carries it), batched as PUBLISH_FRESH.
export const CLUSTER_PUBLISH_FRESH = fresh(`
local receivers = 0
for i = 1, #ARGV - 1 do receivers = redis.call('SPUBLISH', KEYS[1], ARGV[i]) end
return receivers`)

/**
 * TTL of the instances set and of each instance's peer set: long enough to
 * outlive every session the instance recorded and the reaping after it.
 */
export function instanceRecordTtlS (o: { deadAfterMs: number, resumeGraceMs: number, sessionTtlS: number }): number {
  return Math.ceil(o.deadAfterMs * 4 / 1000) + Math.ceil(o.resumeGraceMs / 1000) + o.sessionTtlS
}

/** HGETALL's flat [peerId, instance, …] reply as members. */
export function pairs (flat: string[]): Member[] {
  const members: Member[] = []
  for (let i = 0; i + 1 < flat.length; i += 2) members.push({ peerId: flat[i] as string, instance: flat[i + 1] as string })
  return members
}
