import type { JoinResult, Member, Store } from '../store/types'
import type { Baseline, BusMessage, Envelope } from './bus'

/*
 * The mesh between instances, as the signaling core sees it: LiveKit's
 * Router idea. One interface, a LocalMesh for a single instance and a Redis
 * mesh (src/cluster/redis-mesh.ts) for many; the core never asks which one
 * it has.
 */

/** A session as the shared registry holds it (hashes only, never a secret). */
export interface SessionRecord { secret: string, room: string, node: string }

/** Frames left behind for a peer by an instance that exited before the peer resumed. */
export interface Handover { baseline: Baseline, held: Envelope[] }

export interface ClaimedSession {
  /** The instance that owned the session until now. */
  previous: string
  roomId: string | null
  members: Member[]
  /** The session's new epoch: its outbound sequences restart under it. */
  epoch: number
  /** What an exited owner left behind for the peer (taken in the same step). */
  parked: Handover | null
}

/** A session still held when its instance leaves the mesh. */
export interface LeftSession { peerId: string, roomId: string | null }

export interface EndedSession { peerId: string, roomId: string, remaining: Member[] }

/** A session this instance serves, as it rewrites it into a registry that lost its data. */
export interface RestoredSession { peerId: string, secret: string, roomId: string | null, epoch: number }

export interface MeshEvents {
  /** A message from another instance. */
  message (msg: BusMessage): void
  /** Sessions of a vanished instance that were ended after the grace: tell their rooms. */
  sessionsEnded (ended: EndedSession[]): void
  /** The registry lost its data (a Redis restarted empty): rewrite what this instance serves (`restore`). */
  registryLost (): void
}

/**
 * Whether a failed `send` may still have been carried (the transport took it
 * and then stopped answering) rather than certainly not: the sender of such a
 * relay is told `outcome_unknown`, never `unavailable` (which means "not applied").
 */
export function outcomeUnknown (err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { sent?: unknown }).sent === true
}

export interface Mesh {
  /** This instance's id on the mesh (owner of its sessions, address of its messages). */
  readonly node: string
  /** Whether this instance currently hears the others. */
  readonly reachable: boolean
  start (events: MeshEvents): Promise<void>
  /**
   * Resolves true when `node` received it, false when that instance is gone;
   * rejects when the mesh is unreachable (see outcomeUnknown for whether it
   * may have been carried all the same).
   */
  send (node: string, msg: BusMessage): Promise<boolean>
  readSession (peerId: string): Promise<SessionRecord | null>
  /** Takes a session over, atomically and only while its secret hash is still `expectedHash`. */
  claimSession (peerId: string, expectedHash: string, newHash: string): Promise<ClaimedSession | null>
  rotateSecret (peerId: string, newHash: string): Promise<void>
  /**
   * Joins a room (idempotent for a current member) and writes the peer's
   * session record with it, in one step: its secret hash, room and owner
   * (this instance). The mesh is the one owner of session records: written
   * here, claimed, rotated, parked, ended and restored by the methods below.
   */
  joinRoom (roomId: string, peerId: string, maxPeers: number, secretHash: string): Promise<JoinResult>
  /** Leaves a room: the membership goes, and the session record no longer names the room. */
  leaveRoom (roomId: string, peerId: string): Promise<boolean>
  /**
   * Ends a session and its room membership if `owner` (default: this
   * instance) still owns it; null when it does not (it moved elsewhere).
   */
  endSession (peerId: string, owner?: string): Promise<EndedSession | null>
  /** The instance that owns a session now; null when the session is over. */
  ownerOf (peerId: string): Promise<string | null>
  /**
   * Leaves frames in the registry for a peer that may resume after this
   * instance is gone, if `owner` still owns its session (the claim takes
   * them). Resolves with the owner it found: another one means the peer has
   * moved (send them there); null means its session is over.
   */
  park (peerId: string, owner: string, handover: Handover): Promise<string | null>
  /**
   * Who owns each of these sessions now (null: no record), and whether this
   * instance was silent long enough since the last check to have been reaped
   * (only then can a missing record mean "ended elsewhere"). Resolves null
   * when the registry itself lost its data (a Redis restarted empty), when a
   * missing record proves nothing; rejects when the registry is unreachable.
   */
  ownersOf (peerIds: string[]): Promise<{ owners: Map<string, string | null>, reapable: boolean } | null>
  /**
   * Rewrites this instance's record and these sessions with their room
   * memberships (a session another instance owns by now is left alone);
   * after it the registry is believed again.
   */
  restore (sessions: RestoredSession[]): Promise<void>
  /** Whether another live instance exists (one that could take sessions over). */
  othersAlive (): Promise<boolean>
  /** Whether other live instances were seen when the registry last answered (no round trip). */
  readonly othersSeen: boolean
  /** The instances (this one included) seen alive when the registry last answered. */
  readonly liveNodes: readonly string[]
  /** Stops receiving: once this resolves, no further message arrives. */
  stop (): Promise<void>
  /**
   * Leaves the mesh, with these sessions still held here: another instance
   * (or this one's successor) ends them after the grace unless they resume;
   * a lone instance, which nobody can take over from, ends them now.
   */
  leave (left: readonly LeftSession[]): Promise<void>
}

/**
 * A single instance: there is nobody to send to, sessions live only here
 * (their rooms kept here, the memberships in the store), and ending one is
 * leaving its room.
 */
export function createLocalMesh (store: Pick<Store, 'joinRoom' | 'leaveRoom'>, node: string): Mesh {
  /** The room of each session in one (what ending it leaves). */
  const rooms = new Map<string, string>()
  const leave = async (peerId: string, roomId: string): Promise<boolean> => {
    const left = await store.leaveRoom(roomId, peerId)
    if (rooms.get(peerId) === roomId) rooms.delete(peerId)
    return left
  }
  return {
    node,
    reachable: true,
    async start () {},
    async send () { return false },
    async joinRoom (roomId, peerId, maxPeers) {
      const result = await store.joinRoom(roomId, peerId, maxPeers)
      if (result.ok) rooms.set(peerId, roomId)
      return result
    },
    leaveRoom: async (roomId, peerId) => await leave(peerId, roomId),
    async readSession () { return null },
    async claimSession () { return null },
    async rotateSecret () {},
    async endSession (peerId) {
      const roomId = rooms.get(peerId)
      if (roomId !== undefined) await leave(peerId, roomId)
      return { peerId, roomId: roomId ?? '', remaining: [] }
    },
    async ownerOf () { return null },
    async ownersOf (peerIds) { return { owners: new Map(peerIds.map(peerId => [peerId, node])), reapable: false } },
    async park () { return null },
    async restore () {},
    async othersAlive () { return false },
    othersSeen: false,
    liveNodes: [node],
    async stop () {},
    async leave (left) {
      // Nobody can resume them once this process is gone: their memberships go now.
      for (const { peerId, roomId } of left) if (roomId !== null) await leave(peerId, roomId).catch(() => false)
    }
  }
}
