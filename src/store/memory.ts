import type { JoinResult, RateLimitResult, Store, StoreLimits } from './types'
import { OVERFLOW_REF, REFERRER_TTL_S } from './types'

interface RoomEntry { createdAt: number, expiresAt: number, members: Set<string> }
interface PeerEntry { roomId: string, expiresAt: number }
interface Expiring<T> { value: T, expiresAt: number }

export interface MemoryStoreOptions extends StoreLimits {
  /** How often expired entries are swept out (they are also ignored on read). */
  sweepIntervalMs?: number
  now?: () => number
}

/**
 * Single-instance store with the Redis store's semantics, TTLs included: an
 * expired entry is invisible the moment its deadline passes and is swept out
 * of memory periodically.
 */
export function createMemoryStore (opts: MemoryStoreOptions): Store {
  const now = opts.now ?? Date.now
  const rooms = new Map<string, RoomEntry>()
  const peers = new Map<string, PeerEntry>()
  const joinHits = new Map<string, Expiring<number[]>>()
  const referrers = new Map<string, Expiring<Map<string, number>>>()
  const roomTtlMs = opts.roomTtlS * 1000

  /** The entry unless its deadline has passed (an expired one is removed on the spot). */
  function live<T extends { expiresAt: number }> (map: Map<string, T>, key: string): T | undefined {
    const entry = map.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= now()) {
      map.delete(key)
      return undefined
    }
    return entry
  }
  const liveRoom = (roomId: string) => live(rooms, roomId)
  const livePeer = (peerId: string) => live(peers, peerId)

  function sweep (): void {
    const t = now()
    for (const [id, room] of rooms) if (room.expiresAt <= t) rooms.delete(id)
    for (const [id, peer] of peers) if (peer.expiresAt <= t) peers.delete(id)
    for (const [ip, hits] of joinHits) if (hits.expiresAt <= t) joinHits.delete(ip)
    for (const [day, counts] of referrers) if (counts.expiresAt <= t) referrers.delete(day)
  }
  const sweeper = setInterval(sweep, opts.sweepIntervalMs ?? 5000)
  sweeper.unref()

  return {
    kind: 'memory',

    async createRoom (roomId) {
      if (liveRoom(roomId) !== undefined) return false
      const t = now()
      rooms.set(roomId, { createdAt: t, expiresAt: t + roomTtlMs, members: new Set() })
      return true
    },

    async roomExists (roomId) {
      return liveRoom(roomId) !== undefined
    },

    async joinRoom (roomId, peerId, maxPeers): Promise<JoinResult> {
      const room = liveRoom(roomId)
      if (room === undefined) return { ok: false, code: 'room_not_found' }
      if (!room.members.has(peerId) && room.members.size >= maxPeers) {
        return { ok: false, code: 'room_full' }
      }
      const expiresAt = now() + roomTtlMs
      room.members.add(peerId)
      room.expiresAt = expiresAt
      peers.set(peerId, { roomId, expiresAt })
      return { ok: true, members: [...room.members].map(member => ({ peerId: member, instance: opts.instanceId })) }
    },

    async leaveRoom (roomId, peerId) {
      const room = liveRoom(roomId)
      const peer = livePeer(peerId)
      if (peer?.roomId === roomId) peers.delete(peerId)
      if (room === undefined || !room.members.delete(peerId)) return false
      if (room.members.size === 0) room.expiresAt = now() + opts.roomEmptyTtlS * 1000
      return true
    },

    async roomMembers (roomId) {
      const room = liveRoom(roomId)
      return room === undefined ? [] : [...room.members]
    },

    async peerRoom (peerId) {
      return livePeer(peerId)?.roomId ?? null
    },

    async touchRooms (occupied) {
      const expiresAt = now() + roomTtlMs
      for (const { roomId, peerIds } of occupied) {
        const room = liveRoom(roomId)
        if (room === undefined || room.members.size === 0) continue
        room.expiresAt = expiresAt
        for (const peerId of peerIds) {
          const peer = livePeer(peerId)
          if (peer?.roomId === roomId) peer.expiresAt = expiresAt
        }
      }
    },

    async hitJoinRateLimit (ip): Promise<RateLimitResult> {
      const t = now()
      const windowStart = t - opts.joinLimitWindowMs
      const entry = joinHits.get(ip)
      const hits = entry !== undefined && entry.expiresAt > t
        ? entry.value.filter(ts => ts > windowStart)
        : []
      if (hits.length >= opts.joinLimitMax) {
        joinHits.set(ip, { value: hits, expiresAt: t + opts.joinLimitWindowMs })
        const oldest = hits[0] ?? t
        return { allowed: false, remaining: 0, retryAfterS: Math.max(1, Math.ceil((oldest + opts.joinLimitWindowMs - t) / 1000)) }
      }
      hits.push(t)
      joinHits.set(ip, { value: hits, expiresAt: t + opts.joinLimitWindowMs })
      return { allowed: true, remaining: opts.joinLimitMax - hits.length, retryAfterS: 0 }
    },

    async incrementReferrer (day, ref) {
      const t = now()
      let entry = referrers.get(day)
      if (entry === undefined || entry.expiresAt <= t) {
        entry = { value: new Map(), expiresAt: 0 }
        referrers.set(day, entry)
      }
      // Same cap as the Redis script TRACK_REF: past it, new refs count as one overflow field.
      const distinct = entry.value.size - (entry.value.has(OVERFLOW_REF) ? 1 : 0)
      const field = entry.value.has(ref) || distinct < opts.trackMaxRefsPerDay ? ref : OVERFLOW_REF
      entry.value.set(field, (entry.value.get(field) ?? 0) + 1)
      entry.expiresAt = t + REFERRER_TTL_S * 1000
    },

    async referrerCounts (day) {
      const entry = referrers.get(day)
      if (entry === undefined || entry.expiresAt <= now()) return {}
      return Object.fromEntries(entry.value)
    },

    async ping () {},

    async close () {
      clearInterval(sweeper)
      rooms.clear()
      peers.clear()
      joinHits.clear()
      referrers.clear()
    }
  }
}
