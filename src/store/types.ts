import createError from '@fastify/error'

/** Raised by a store whose backend cannot be reached; Fastify answers 503. */
export const StoreUnavailableError = createError(
  'PRIVYDROP_STORE_UNAVAILABLE',
  'Store unavailable, try again shortly',
  503
)

export type JoinFailure = 'room_not_found' | 'room_full'
/** A room member and the instance that holds its connection. */
export interface Member { peerId: string, instance: string }
export type JoinResult =
  | { ok: true, members: Member[] }
  | { ok: false, code: JoinFailure }

export interface RateLimitResult {
  allowed: boolean
  /** Attempts still allowed in the current window (0 when refused). */
  remaining: number
  /** Whole seconds until the next attempt is allowed (0 when allowed). */
  retryAfterS: number
}

export interface StoreLimits {
  /** This instance's id, recorded with each member it joins. */
  instanceId: string
  roomTtlS: number
  roomEmptyTtlS: number
  joinLimitMax: number
  joinLimitWindowMs: number
  /** Distinct referrers counted per day; later ones are counted under `other`. */
  trackMaxRefsPerDay: number
}

/**
 * Shared state of the signaling server: rooms, their members, the join rate
 * limiter and referrer counts. Both implementations keep the same semantics,
 * TTLs included, and are exercised by one contract test suite.
 */
export interface Store {
  readonly kind: 'memory' | 'redis'
  /** Creates the room unless a live room has that id. Resolves true when created. */
  createRoom (roomId: string): Promise<boolean>
  roomExists (roomId: string): Promise<boolean>
  /**
   * Adds a member (idempotent for a current member) and refreshes the room's
   * TTL. With `secretHash` (Redis mode), the peer's resume record is written
   * in the same step, so another instance can take the session over.
   */
  joinRoom (roomId: string, peerId: string, maxPeers: number, secretHash?: string): Promise<JoinResult>
  /** Removes a member; an emptied room expires after roomEmptyTtlS. Resolves true when it was a member. */
  leaveRoom (roomId: string, peerId: string): Promise<boolean>
  roomMembers (roomId: string): Promise<string[]>
  /** The room this peer is a member of, if any. */
  peerRoom (peerId: string): Promise<string | null>
  /**
   * Keeps occupied rooms alive for another roomTtlS, with the bindings of the
   * given members (each instance touches the members it holds connections for).
   */
  touchRooms (occupied: Array<{ roomId: string, peerIds: string[] }>): Promise<void>
  /** Records a join attempt by `ip` in its sliding window. */
  hitJoinRateLimit (ip: string): Promise<RateLimitResult>
  /** Counts `ref` for `day`; once trackMaxRefsPerDay refs are known that day, a new ref counts as `other`. */
  incrementReferrer (day: string, ref: string): Promise<void>
  referrerCounts (day: string): Promise<Record<string, number>>
  /** Resolves when the backend answers; rejects with StoreUnavailableError otherwise. */
  ping (): Promise<void>
  close (): Promise<void>
}

export const REFERRER_TTL_S = 30 * 24 * 60 * 60
/** Referrers beyond the day's cap (TRACK_MAX_REFS_PER_DAY) are counted under this field. */
export const OVERFLOW_REF = 'other'

/** YYYY-MM-DD of the server's UTC day: the day referrers are counted under. */
export function utcDay (nowMs = Date.now()): string {
  return new Date(nowMs).toISOString().slice(0, 10)
}
