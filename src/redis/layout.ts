import type { RedisClient } from './client'
import type { JoinResult, Member } from '../store/types'
import type { RedisKeys } from './keys'
import type { ScriptCaller } from './script'

/*
 * How the data model (src/redis/keys.ts) is written: the steps that span a
 * room, a peer and an instance. Two implementations write the same keys and
 * values: on one Redis (direct or Sentinel) each step is one script
 * (standalone.ts); on Redis Cluster a script may only touch one slot, so a
 * step is one script per slot, ordered so that nothing a reader would act
 * on is left when a later one fails (cluster.ts). The store and the mesh
 * take whichever `createLayout` (layouts.ts) picks and never ask which one
 * they have.
 */

export interface ClaimedRecord {
  /** The instance that owned the session until now. */
  previous: string
  /** The room the session is in ('' for none; also when the peer is no longer its member). */
  roomId: string
  members: Member[]
  epoch: number
  /** Handovers an exited owner parked for the peer (JSON), taken in the same step. */
  parked: string[]
}

export interface Layout {
  readonly keys: RedisKeys
  /** Runs a script of the layout's set (the scripts both share included). */
  readonly call: ScriptCaller
  /**
   * Records a member and, given a secret hash ('' none), its session and
   * this instance's ownership of it. (`emptyTtl`: a room a failed join
   * leaves empty lives that long.)
   */
  join (a: { roomId: string, peerId: string, max: number, ttl: number, emptyTtl: number, instance: string, secretHash: string, ownedTtl: number }): Promise<JoinResult>
  /** Whether the peer was a member. */
  leave (a: { roomId: string, peerId: string, emptyTtl: number }): Promise<boolean>
  /** Extends the rooms' TTLs and their local members' bindings and sessions. */
  touch (a: { occupied: ReadonlyArray<{ roomId: string, peerIds: readonly string[] }>, ttl: number }): Promise<void>
  /** Moves a session to `instance` if its secret hash is still `expectedHash`; null when it is not. */
  claim (a: { peerId: string, expectedHash: string, newHash: string, instance: string, ttl: number, ownedTtl: number }): Promise<ClaimedRecord | null>
  /** Ends a session and its membership if `owner` owns it; null when it does not. */
  end (a: { peerId: string, owner: string, emptyTtl: number }): Promise<{ roomId: string, remaining: Member[] } | null>
  /** Publishes to an instance's channel, in order; resolves with the receiver count. */
  publish (a: { node: string, payloads: readonly string[] }): Promise<number>
  /** Starts hearing a channel on the subscriber connection. */
  subscribe (subscriber: RedisClient, channel: string): Promise<unknown>
  unsubscribe (subscriber: RedisClient, channel: string): Promise<unknown>
  /** The subscriber's event that carries a channel's messages. */
  readonly messageEvent: 'message' | 'smessage'
}

export interface LayoutOptions {
  redis: RedisClient
  keyPrefix: string
  /** The deadline every write carries (RedisLink.deadline()). */
  deadline: () => number
}
