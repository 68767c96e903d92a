import type { JoinFailure, Member } from '../store/types'
import { defineScript, type AnyScript } from './script'

/*
 * Every Redis script of the server, each defined once (src/redis/script.ts):
 * its keys and arguments by name, its Lua, its reply decoder. Every key a
 * script touches is passed in KEYS, built by src/redis/keys.ts; no Lua
 * builds a key name. Check-and-write steps run as scripts so concurrent
 * instances cannot race; every write script is `fresh`: it refuses to run
 * past its caller's deadline (Redis's clock, src/redis/link.ts), so a write
 * that reaches a hung Redis and runs after it wakes up, when its caller was
 * long told "unavailable", does nothing.
 *
 * Two sets write the same data model (key model in src/redis/keys.ts):
 * - one Redis (direct or Sentinel): a step that spans a room, a peer and an
 *   instance is one script (src/redis/standalone.ts);
 * - Redis Cluster: a script may only touch keys of one slot, so such a step
 *   runs as one script per slot, in an order that leaves nothing a reader
 *   would act on when a later step fails (src/redis/cluster.ts).
 * The scripts in "Both" serve both.
 */

/** HGETALL's flat [peerId, instance, …] reply as members. */
export function pairs (flat: string[]): Member[] {
  const members: Member[] = []
  for (let i = 0; i + 1 < flat.length; i += 2) members.push({ peerId: flat[i] as string, instance: flat[i + 1] as string })
  return members
}

const joinFailure = (code: unknown): JoinFailure => code === 'room_full' ? 'room_full' : 'room_not_found'
const isOne = (reply: unknown): boolean => reply === 1
const ignore = (): void => {}

/** A standalone step that read a key from data first: the data changed meanwhile, read again. */
export const RETRY = 'retry'

// --- Both ----------------------------------------------------------------------

export const createRoom = defineScript({
  name: 'pdCreateRoom',
  keys: ['room', 'sockets', 'peers'],
  args: ['createdAt', 'ttl'],
  fresh: true,
  lua: `
if redis.call('EXISTS', K.room) == 1 then return 0 end
redis.call('DEL', K.sockets, K.peers)
redis.call('HSET', K.room, 'created_at', A.createdAt)
redis.call('EXPIRE', K.room, A.ttl)
return 1`,
  decode: isOne
})

/** Sliding window: drop attempts older than the window, then admit or refuse. */
export const joinRateLimit = defineScript({
  name: 'pdJoinRateLimit',
  keys: ['attempts'],
  args: ['now', 'windowMs', 'max', 'member'],
  fresh: true,
  lua: `
local now = tonumber(A.now)
local window = tonumber(A.windowMs)
local max = tonumber(A.max)
redis.call('ZREMRANGEBYSCORE', K.attempts, '-inf', now - window)
local count = redis.call('ZCARD', K.attempts)
if count >= max then
  local oldest = redis.call('ZRANGE', K.attempts, 0, 0, 'WITHSCORES')
  redis.call('PEXPIRE', K.attempts, window)
  return {0, 0, tonumber(oldest[2])}
end
redis.call('ZADD', K.attempts, now, A.member)
redis.call('PEXPIRE', K.attempts, window)
return {1, max - count - 1, 0}`,
  decode: (reply) => {
    const [allowed, remaining, oldest] = reply as [number, number, number]
    return { allowed: allowed === 1, remaining, oldest }
  }
})

/** Counts a referrer for a day; past `max` distinct refs, new ones count under the overflow field. */
export const trackRef = defineScript({
  name: 'pdTrackRef',
  keys: ['referrers'],
  args: ['ref', 'max', 'ttl', 'overflow'],
  fresh: true,
  lua: `
local field = A.ref
if redis.call('HEXISTS', K.referrers, field) == 0 then
  local distinct = redis.call('HLEN', K.referrers) - redis.call('HEXISTS', K.referrers, A.overflow)
  if distinct >= tonumber(A.max) then field = A.overflow end
end
redis.call('HINCRBY', K.referrers, field, 1)
redis.call('EXPIRE', K.referrers, A.ttl)
return 1`,
  decode: ignore
})

/**
 * A new resume secret for a session that still exists (a session record
 * lost with Redis's data is not re-created, and so never lacks a TTL).
 * True when recorded.
 */
export const rotateSecret = defineScript({
  name: 'pdRotate',
  keys: ['session'],
  args: ['hash'],
  fresh: true,
  lua: `
if redis.call('EXISTS', K.session) == 0 then return 0 end
redis.call('HSET', K.session, 'secret', A.hash)
return 1`,
  decode: isOne
})

/**
 * Parks a handover for a peer whose session `owner` still owns. Resolves
 * with the session's owner (the caller compares), or null when the session
 * is over.
 */
export const parkHandover = defineScript({
  name: 'pdPark',
  keys: ['session', 'parked'],
  args: ['owner', 'ttl', 'handover'],
  fresh: true,
  lua: `
local owner = redis.call('HGET', K.session, 'instance')
if not owner then return nil end
if owner == A.owner then
  redis.call('RPUSH', K.parked, A.handover)
  redis.call('EXPIRE', K.parked, A.ttl)
end
return owner`,
  decode: (reply) => reply as string | null
})

// Rebuilding after Redis lost its data (each script within one slot): every
// instance rewrites what it still serves, its sessions and their room
// memberships. A record another instance wrote meanwhile wins.

/** True when written, false when another instance owns the session now. */
export const restoreSession = defineScript({
  name: 'pdRestoreSession',
  keys: ['session', 'binding'],
  args: ['secret', 'roomId', 'instance', 'epoch', 'ttl'],
  fresh: true,
  lua: `
local owner = redis.call('HGET', K.session, 'instance')
if owner and owner ~= A.instance then return 0 end
redis.call('HSET', K.session, 'secret', A.secret, 'room', A.roomId, 'instance', A.instance)
if tonumber(A.epoch) > tonumber(redis.call('HGET', K.session, 'epoch') or '0') then
  redis.call('HSET', K.session, 'epoch', A.epoch)
end
redis.call('EXPIRE', K.session, A.ttl)
if A.roomId ~= '' then redis.call('SET', K.binding, A.roomId, 'EX', A.ttl) end
return 1`,
  decode: isOne
})

export const restoreMember = defineScript({
  name: 'pdRestoreMember',
  keys: ['room', 'sockets', 'peers'],
  args: ['peerId', 'instance', 'ttl', 'createdAt'],
  fresh: true,
  lua: `
redis.call('HSETNX', K.room, 'created_at', A.createdAt)
redis.call('SADD', K.sockets, A.peerId)
redis.call('HSET', K.peers, A.peerId, A.instance)
redis.call('EXPIRE', K.room, A.ttl)
redis.call('EXPIRE', K.sockets, A.ttl)
redis.call('EXPIRE', K.peers, A.ttl)
return 1`,
  decode: ignore
})

/**
 * Admits one more connection from a client IP if the live instances' shares
 * (its own excluded, then counted as `mine`) leave room under the cap, and
 * records `mine` as this instance's share. A resume of a session held on
 * another instance discounts that instance's share by one (it is moving
 * here); `discounted` is '' for none. Resolves -1 when admitted, else the
 * other instances' count.
 */
export const admitConnection = defineScript({
  name: 'pdAdmitConnection',
  keys: ['conns'],
  args: ['self', 'cap', 'mine', 'ttl', 'discounted'],
  restArgs: 'live',
  fresh: true,
  lua: `
local others = 0
for _, instance in ipairs(A.live) do
  if instance ~= A.self then
    local n = tonumber(redis.call('HGET', K.conns, instance) or '0')
    if instance == A.discounted and n > 0 then n = n - 1 end
    others = others + n
  end
end
if others + tonumber(A.mine) > tonumber(A.cap) then return others end
redis.call('HSET', K.conns, A.self, A.mine)
redis.call('EXPIRE', K.conns, A.ttl)
return -1`,
  decode: (reply) => reply as number
})

/**
 * A fixed-window request counter (the REST limiter): the count, and the
 * window's remaining milliseconds. Not deadline-checked: a late increment
 * only counts a request that did happen.
 */
export const countRequest = defineScript({
  name: 'pdCountRequest',
  keys: ['counter'],
  args: ['windowMs'],
  fresh: false,
  lua: `
local current = redis.call('INCR', K.counter)
if current == 1 then
  redis.call('PEXPIRE', K.counter, A.windowMs)
  return {current, tonumber(A.windowMs)}
end
local ttl = redis.call('PTTL', K.counter)
if ttl < 0 then
  redis.call('PEXPIRE', K.counter, A.windowMs)
  ttl = tonumber(A.windowMs)
end
return {current, ttl}`,
  decode: (reply) => {
    const [current, ttl] = reply as [number, number]
    return { current, ttl }
  }
})

/** The ioredis command that publishes (it bypasses auto-pipelining: see src/redis/client.ts). */
export const PUBLISH_COMMAND = 'pdPublish'

/**
 * PUBLISH behind the deadline check: a relay reported unavailable is never
 * published later. Several messages to one channel in one call (one script
 * run and one deadline check for the batch), each still its own PUBLISH, in
 * order. The channel is declared as a key so a cluster routes it. Resolves
 * with the receiver count, as PUBLISH does (the same for every message of
 * the batch). On a cluster it is SPUBLISH (sharded pub/sub: only the
 * channel's shard carries it): same name, same signature.
 */
function publishScript (command: 'PUBLISH' | 'SPUBLISH') {
  return defineScript({
    name: PUBLISH_COMMAND,
    keys: ['channel'],
    args: [],
    restArgs: 'payloads',
    fresh: true,
    lua: `
local receivers = 0
for _, payload in ipairs(A.payloads) do receivers = redis.call('${command}', K.channel, payload) end
return receivers`,
    decode: (reply) => reply as number
  })
}

// --- One Redis: one script per step ------------------------------------------------

/**
 * Records a member (with the instance serving it) and, given a secret hash,
 * the peer's resumable session; answers every member with its instance, so
 * the joining instance learns where to route without asking again. The
 * session is written here rather than at connect: only a peer in a room has
 * anything to resume. `secretHash` '' keeps none.
 */
export const joinRoom = defineScript({
  name: 'pdJoinRoom',
  keys: ['room', 'sockets', 'binding', 'peers', 'session', 'owned'],
  args: ['peerId', 'roomId', 'max', 'ttl', 'instance', 'secretHash', 'ownedTtl'],
  fresh: true,
  lua: `
if redis.call('EXISTS', K.room) == 0 then return {0, 'room_not_found'} end
if redis.call('SISMEMBER', K.sockets, A.peerId) == 0 and redis.call('SCARD', K.sockets) >= tonumber(A.max) then
  return {0, 'room_full'}
end
redis.call('SADD', K.sockets, A.peerId)
redis.call('HSET', K.peers, A.peerId, A.instance)
redis.call('SET', K.binding, A.roomId, 'EX', A.ttl)
redis.call('EXPIRE', K.room, A.ttl)
redis.call('EXPIRE', K.sockets, A.ttl)
redis.call('EXPIRE', K.peers, A.ttl)
if A.secretHash ~= '' then
  redis.call('HSET', K.session, 'secret', A.secretHash, 'room', A.roomId, 'instance', A.instance)
  redis.call('EXPIRE', K.session, A.ttl)
  redis.call('SADD', K.owned, A.peerId)
  redis.call('EXPIRE', K.owned, A.ownedTtl)
end
return {1, redis.call('HGETALL', K.peers)}`,
  decode: (reply) => {
    const r = reply as [0, string] | [1, string[]]
    return r[0] === 1 ? { ok: true as const, members: pairs(r[1]) } : { ok: false as const, code: joinFailure(r[1]) }
  }
})

/** True when the peer was a member. */
export const leaveRoom = defineScript({
  name: 'pdLeaveRoom',
  keys: ['room', 'sockets', 'binding', 'peers', 'session'],
  args: ['peerId', 'roomId', 'emptyTtl'],
  fresh: true,
  lua: `
if redis.call('GET', K.binding) == A.roomId then redis.call('DEL', K.binding) end
redis.call('HDEL', K.peers, A.peerId)
if redis.call('HGET', K.session, 'room') == A.roomId then redis.call('HSET', K.session, 'room', '') end
local removed = redis.call('SREM', K.sockets, A.peerId)
if removed == 1 and redis.call('SCARD', K.sockets) == 0 and redis.call('EXISTS', K.room) == 1 then
  redis.call('EXPIRE', K.room, A.emptyTtl)
end
return removed`,
  decode: isOne
})

/**
 * Extends a live room's TTL and its local members' bindings and sessions.
 * `members`: the binding and session key of each local member, in pairs;
 * a member bound to another room by now is left alone.
 */
export const touchRoom = defineScript({
  name: 'pdTouchRoom',
  keys: ['room', 'sockets', 'peers'],
  restKeys: 'members',
  args: ['roomId', 'ttl'],
  fresh: true,
  lua: `
if redis.call('SCARD', K.sockets) == 0 or redis.call('EXISTS', K.room) == 0 then return 0 end
redis.call('EXPIRE', K.room, A.ttl)
redis.call('EXPIRE', K.sockets, A.ttl)
redis.call('EXPIRE', K.peers, A.ttl)
for i = 1, #K.members, 2 do
  if redis.call('GET', K.members[i]) == A.roomId then
    redis.call('EXPIRE', K.members[i], A.ttl)
    redis.call('EXPIRE', K.members[i + 1], A.ttl)
  end
end
return 1`,
  decode: isOne
})

/**
 * Moves a session to a new owner if the caller knows its current secret
 * hash, and takes what an exited owner parked for the peer. The keys of the
 * previous owner's peer set and of the room come from the session record:
 * the caller reads it first and passes `previous` and `roomId` (with the
 * room's `roomPeers` when it is not ''); when the record names others by now
 * the script changes nothing and answers RETRY. Null when the hash is not
 * the session's (or there is no session).
 */
export const claimSession = defineScript({
  name: 'pdClaimSession',
  keys: ['session', 'parked', 'ownedByPrevious', 'ownedByClaimer'],
  optionalKeys: ['roomPeers'],
  args: ['expectedHash', 'newHash', 'instance', 'previous', 'roomId', 'ttl', 'peerId', 'ownedTtl'],
  fresh: true,
  lua: `
if redis.call('HGET', K.session, 'secret') ~= A.expectedHash then return nil end
local previous = redis.call('HGET', K.session, 'instance')
local room = redis.call('HGET', K.session, 'room') or ''
if previous ~= A.previous or room ~= A.roomId or (room ~= '' and not K.roomPeers) then return {0} end
local epoch = redis.call('HINCRBY', K.session, 'epoch', 1)
redis.call('HSET', K.session, 'secret', A.newHash, 'instance', A.instance)
redis.call('EXPIRE', K.session, A.ttl)
redis.call('SREM', K.ownedByPrevious, A.peerId)
redis.call('SADD', K.ownedByClaimer, A.peerId)
redis.call('EXPIRE', K.ownedByClaimer, A.ownedTtl)
local parked = redis.call('LRANGE', K.parked, 0, -1)
redis.call('DEL', K.parked)
local members = {}
if room ~= '' then
  if redis.call('HEXISTS', K.roomPeers, A.peerId) == 1 then
    redis.call('HSET', K.roomPeers, A.peerId, A.instance)
    members = redis.call('HGETALL', K.roomPeers)
  else
    room = ''
  end
end
return {1, previous, room, members, epoch, parked}`,
  decode: (reply) => {
    if (reply === null) return null
    const r = reply as [0] | [1, string, string, string[], number, string[]]
    if (r[0] === 0) return RETRY
    return { previous: r[1], roomId: r[2], members: pairs(r[3]), epoch: Number(r[4]), parked: r[5] }
  }
})

/**
 * Ends a session if `owner` owns it, and removes the peer from its room.
 * The room's keys come from the session record: the caller reads it first
 * and passes `roomId` (with the room's keys when it is not ''); when the
 * record names another room by now the script changes nothing and answers
 * RETRY. Null when `owner` does not own the session (or there is none).
 */
export const endSession = defineScript({
  name: 'pdEndSession',
  keys: ['session', 'parked', 'owned', 'binding'],
  optionalKeys: ['room', 'sockets', 'peers'],
  args: ['owner', 'peerId', 'roomId', 'emptyTtl'],
  fresh: true,
  lua: `
local owner = redis.call('HGET', K.session, 'instance')
if not owner or owner ~= A.owner then return nil end
local room = redis.call('HGET', K.session, 'room') or ''
if room ~= A.roomId or (room ~= '' and not K.room) then return {0} end
redis.call('DEL', K.session, K.parked)
redis.call('SREM', K.owned, A.peerId)
if room == '' then return {1, '', {}} end
if redis.call('GET', K.binding) == room then redis.call('DEL', K.binding) end
redis.call('HDEL', K.peers, A.peerId)
if redis.call('SREM', K.sockets, A.peerId) == 1 and redis.call('SCARD', K.sockets) == 0 and redis.call('EXISTS', K.room) == 1 then
  redis.call('EXPIRE', K.room, A.emptyTtl)
end
return {1, room, redis.call('HGETALL', K.peers)}`,
  decode: (reply) => {
    if (reply === null) return null
    const r = reply as [0] | [1, string, string[]]
    if (r[0] === 0) return RETRY
    return { roomId: r[1], remaining: pairs(r[2]) }
  }
})

export const publish = publishScript('PUBLISH')

// --- Redis Cluster: one slot per script -----------------------------------------

/** The room's side of a join: {ok, members, added (the peer was not a member before)} or the failure. */
export const clusterJoinRoom = defineScript({
  name: 'pdcJoinRoom',
  keys: ['room', 'sockets', 'peers'],
  args: ['peerId', 'max', 'ttl', 'instance'],
  fresh: true,
  lua: `
if redis.call('EXISTS', K.room) == 0 then return {0, 'room_not_found'} end
if redis.call('SISMEMBER', K.sockets, A.peerId) == 0 and redis.call('SCARD', K.sockets) >= tonumber(A.max) then
  return {0, 'room_full'}
end
local added = redis.call('SADD', K.sockets, A.peerId)
redis.call('HSET', K.peers, A.peerId, A.instance)
redis.call('EXPIRE', K.room, A.ttl)
redis.call('EXPIRE', K.sockets, A.ttl)
redis.call('EXPIRE', K.peers, A.ttl)
return {1, redis.call('HGETALL', K.peers), added}`,
  decode: (reply) => {
    const r = reply as [0, string] | [1, string[], number]
    return r[0] === 1 ? { ok: true as const, members: pairs(r[1]), added: r[2] === 1 } : { ok: false as const, code: joinFailure(r[1]) }
  }
})

/** The peer's side of a join: its binding and, given a secret hash ('' = none), its session. */
export const clusterBindPeer = defineScript({
  name: 'pdcBindPeer',
  keys: ['binding', 'session'],
  args: ['roomId', 'ttl', 'instance', 'secretHash'],
  fresh: true,
  lua: `
redis.call('SET', K.binding, A.roomId, 'EX', A.ttl)
if A.secretHash ~= '' then
  redis.call('HSET', K.session, 'secret', A.secretHash, 'room', A.roomId, 'instance', A.instance)
  redis.call('EXPIRE', K.session, A.ttl)
end
return 1`,
  decode: ignore
})

/** The peer's side of a leave. */
export const clusterUnbindPeer = defineScript({
  name: 'pdcUnbindPeer',
  keys: ['binding', 'session'],
  args: ['roomId'],
  fresh: true,
  lua: `
if redis.call('GET', K.binding) == A.roomId then redis.call('DEL', K.binding) end
if redis.call('HGET', K.session, 'room') == A.roomId then redis.call('HSET', K.session, 'room', '') end
return 1`,
  decode: ignore
})

/** The room's side of a leave: whether the peer was a member, and the members left. */
export const clusterLeaveRoom = defineScript({
  name: 'pdcLeaveRoom',
  keys: ['room', 'sockets', 'peers'],
  args: ['peerId', 'emptyTtl'],
  fresh: true,
  lua: `
redis.call('HDEL', K.peers, A.peerId)
local removed = redis.call('SREM', K.sockets, A.peerId)
if removed == 1 and redis.call('SCARD', K.sockets) == 0 and redis.call('EXISTS', K.room) == 1 then
  redis.call('EXPIRE', K.room, A.emptyTtl)
end
return {removed, redis.call('HGETALL', K.peers)}`,
  decode: (reply) => {
    const [removed, remaining] = reply as [number, string[]]
    return { removed: removed === 1, remaining: pairs(remaining) }
  }
})

export const clusterTouchRoom = defineScript({
  name: 'pdcTouchRoom',
  keys: ['room', 'sockets', 'peers'],
  args: ['ttl'],
  fresh: true,
  lua: `
if redis.call('SCARD', K.sockets) == 0 or redis.call('EXISTS', K.room) == 0 then return 0 end
redis.call('EXPIRE', K.room, A.ttl)
redis.call('EXPIRE', K.sockets, A.ttl)
redis.call('EXPIRE', K.peers, A.ttl)
return 1`,
  decode: isOne
})

/** A member's binding and session live as long as its room, while it is bound to that room. */
export const clusterTouchPeer = defineScript({
  name: 'pdcTouchPeer',
  keys: ['binding', 'session'],
  args: ['roomId', 'ttl'],
  fresh: true,
  lua: `
if redis.call('GET', K.binding) ~= A.roomId then return 0 end
redis.call('EXPIRE', K.binding, A.ttl)
redis.call('EXPIRE', K.session, A.ttl)
return 1`,
  decode: isOne
})

/** Adds a peer to an instance's peer set (with its TTL), or with `ttl` '' removes it. */
export const clusterOwn = defineScript({
  name: 'pdcOwn',
  keys: ['owned'],
  args: ['peerId', 'ttl'],
  fresh: true,
  lua: `
if A.ttl == '' then return redis.call('SREM', K.owned, A.peerId) end
redis.call('SADD', K.owned, A.peerId)
redis.call('EXPIRE', K.owned, A.ttl)
return 1`,
  decode: ignore
})

/** The session's side of a claim: {previous instance, room, epoch, parked handovers}, or null. */
export const clusterClaimSession = defineScript({
  name: 'pdcClaimSession',
  keys: ['session', 'parked'],
  args: ['expectedHash', 'newHash', 'instance', 'ttl'],
  fresh: true,
  lua: `
if redis.call('HGET', K.session, 'secret') ~= A.expectedHash then return nil end
local previous = redis.call('HGET', K.session, 'instance')
local room = redis.call('HGET', K.session, 'room')
local epoch = redis.call('HINCRBY', K.session, 'epoch', 1)
redis.call('HSET', K.session, 'secret', A.newHash, 'instance', A.instance)
redis.call('EXPIRE', K.session, A.ttl)
local parked = redis.call('LRANGE', K.parked, 0, -1)
redis.call('DEL', K.parked)
return {previous, room, epoch, parked}`,
  decode: (reply) => {
    if (reply === null) return null
    const [previous, roomId, epoch, parked] = reply as [string, string, number, string[]]
    return { previous, roomId, epoch: Number(epoch), parked }
  }
})

/** The room's side of a claim: the members, or null when the peer is no longer one. */
export const clusterClaimRoom = defineScript({
  name: 'pdcClaimRoom',
  keys: ['peers'],
  args: ['peerId', 'instance'],
  fresh: true,
  lua: `
if redis.call('HEXISTS', K.peers, A.peerId) == 0 then return nil end
redis.call('HSET', K.peers, A.peerId, A.instance)
return redis.call('HGETALL', K.peers)`,
  decode: (reply) => reply === null ? null : pairs(reply as string[])
})

/** The session's side of ending it: its room ('' for none), or null when `owner` does not own it. */
export const clusterEndSession = defineScript({
  name: 'pdcEndSession',
  keys: ['session', 'parked', 'binding'],
  args: ['owner'],
  fresh: true,
  lua: `
local owner = redis.call('HGET', K.session, 'instance')
if not owner or owner ~= A.owner then return nil end
local room = redis.call('HGET', K.session, 'room')
redis.call('DEL', K.session, K.parked)
if room ~= '' and redis.call('GET', K.binding) == room then redis.call('DEL', K.binding) end
return room`,
  decode: (reply) => reply as string | null
})

export const clusterPublish = publishScript('SPUBLISH')

/** The scripts both data-model implementations use. */
export const SHARED_SCRIPTS: readonly AnyScript[] = [createRoom, joinRateLimit, trackRef, rotateSecret, parkHandover, restoreSession, restoreMember]
/** One Redis. */
export const STANDALONE_SCRIPTS: readonly AnyScript[] = [...SHARED_SCRIPTS, joinRoom, leaveRoom, touchRoom, claimSession, endSession, publish]
/** Redis Cluster. */
export const CLUSTER_SCRIPTS: readonly AnyScript[] = [
  ...SHARED_SCRIPTS, clusterJoinRoom, clusterBindPeer, clusterUnbindPeer, clusterLeaveRoom, clusterTouchRoom, clusterTouchPeer,
  clusterOwn, clusterClaimSession, clusterClaimRoom, clusterEndSession, clusterPublish
]
/** Every script of the server (the connection cap's and the REST limiter's included). */
export const ALL_SCRIPTS: readonly AnyScript[] = [...new Set([...STANDALONE_SCRIPTS, ...CLUSTER_SCRIPTS, admitConnection, countRequest])]
