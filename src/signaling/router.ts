import type { Member } from '../store/types'
import type { Envelope } from './bus'
import { outcomeUnknown, type Mesh } from './mesh'
import { Remote } from './remote'
import type { Clock, Logger, SignalingMetrics } from './types'
import { brief, type LogLimiter } from './log-limiter'

/*
 * Outbound routes to peers on other instances, for the rooms this instance
 * has members in: which instance serves each remote peer, learned from the
 * store at join and kept current by membership messages.
 *
 * Per remote peer, frames leave in the order they were sent. A publish that
 * reaches nobody means the peer's instance is gone (crashed, or exited after a
 * drain): the frame "bounces" and, with everything sent after it, waits here
 * until the peer is found on another instance (announced by that instance, or
 * read from its session record), or its session ends (then relay senders
 * hear peer_not_found). When a route changes while frames are still in
 * flight to the old instance, new frames wait until those are settled, so a
 * bounced frame is never overtaken by a later one.
 */

const RESOLVE_RETRY_MS = 200
/** A routed room with no remote member yet (most rooms on a single instance): shared, never written. */
const NO_REMOTES: ReadonlyMap<string, Remote> = new Map()

export interface RouterPorts {
  mesh: Mesh
  clock: Clock
  log: Logger
  /** Client-driven warnings (every relay during an outage) are logged at most once per window. */
  warnings: LogLimiter
  metrics: SignalingMetrics
  /** Most frames kept for one unreachable peer; beyond it they are refused. */
  queueMax: number
  /** How long frames wait for a peer whose instance vanished before they are refused. */
  deadlineMs: number
  /**
   * Frames for a peer this router no longer routes (it left, its session
   * ended, it resumed on this instance, or its route expired): the hub
   * delivers them here if the peer is now local, or refuses them.
   */
  orphaned (peerId: string, roomId: string, env: Envelope): void
  /** The mesh could not carry a frame, or (`unknown`) may have carried it without saying so. */
  failed (env: Envelope, unknown: boolean): void
}

export function createRouter (ports: RouterPorts) {
  const { mesh, clock } = ports
  const self = mesh.node
  const remotes = new Map<string, Remote>()
  const byRoom = new Map<string, Map<string, Remote>>()

  function add (roomId: string, peerId: string, node: string): void {
    const existing = remotes.get(peerId)
    if (existing !== undefined && existing.roomId === roomId) {
      moveTo(existing, node)
      return
    }
    if (existing !== undefined) remove(existing)
    const remote = new Remote(peerId, roomId, node)
    remotes.set(peerId, remote)
    let room = byRoom.get(roomId)
    if (room === undefined || room === NO_REMOTES) {
      room = new Map()
      byRoom.set(roomId, room)
    }
    room.set(peerId, remote)
  }

  /** Forgets a remote peer; its waiting frames go back to the hub. */
  function remove (remote: Remote): void {
    remote.removed = true
    remotes.delete(remote.peerId)
    const room = byRoom.get(remote.roomId)
    room?.delete(remote.peerId)
    if (remote.retry !== null) clock.clearTimeout(remote.retry)
    for (const env of remote.takeWaiting()) ports.orphaned(remote.peerId, remote.roomId, env)
  }

  function moveTo (remote: Remote, node: string): void {
    if (remote.node === node) return
    remote.node = node
    // Frames in flight to the old instance may bounce: nothing overtakes them.
    if (remote.inflight > 0) remote.blocked = true
    settle(remote)
  }

  /** Publishes frames with the same content to several peers on one instance (one publish). */
  function publish (node: string, roomId: string, items: Array<[Remote, Envelope]>, broadcast: boolean): void {
    const first = items[0]
    if (first === undefined) return
    const [, env] = first
    for (const [remote] of items) remote.inflight++
    mesh.send(node, {
      kind: 'D',
      origin: self,
      roomId,
      from: env.from,
      epoch: env.epoch,
      type: env.type,
      id: env.id,
      broadcast,
      targets: items.map(([remote, e]) => [remote.peerId, e.seq]),
      frame: env.frame
    }).then((received) => {
      for (const [remote, e] of items) {
        remote.inflight--
        if (received) {
          remote.lostSince = null
          settle(remote)
        } else if (remote.removed) ports.orphaned(remote.peerId, remote.roomId, e)
        else {
          bounce(remote, node, e)
          settle(remote)
        }
      }
    }, (err: unknown) => {
      const skipped = ports.warnings.take('relay: mesh unreachable')
      if (skipped !== null) ports.log.warn({ error: brief(err), node, skipped }, 'could not reach another instance')
      const unknown = outcomeUnknown(err)
      for (const [remote, e] of items) {
        remote.inflight--
        ports.failed(e, unknown)
        if (!remote.removed) settle(remote)
      }
    })
  }

  function bounce (remote: Remote, node: string, env: Envelope): void {
    ports.metrics.rerouted()
    remote.blocked = true
    remote.lostSince ??= clock.now()
    remote.deadNode = node
    remote.bounced.push(env)
  }

  /** Once nothing is in flight: send what waited (route known) or find the peer (its instance is gone). */
  function settle (remote: Remote): void {
    if (!remote.blocked || remote.inflight > 0 || remote.removed) return
    if (remote.deadNode !== null && remote.deadNode === remote.node) {
      resolve(remote)
      return
    }
    remote.blocked = false
    remote.deadNode = null
    for (const env of remote.takeWaiting()) send(remote, env)
  }

  /**
   * The peer's instance answered nobody: ask the registry where the peer is.
   * Elsewhere → send there. Still there → try that instance again shortly (it
   * may only have been resubscribing, as during a Redis restart), until the
   * peer resumes elsewhere, its session ends, or the deadline passes.
   */
  function resolve (remote: Remote): void {
    if (remote.resolving || remote.retry !== null) return
    remote.resolving = true
    const retry = (): void => {
      if (clock.now() - (remote.lostSince ?? clock.now()) > ports.deadlineMs) {
        ports.log.info({ peerId: remote.peerId }, 'peer did not reappear on another instance in time; its frames are refused')
        remove(remote)
        return
      }
      remote.retry = clock.setTimeout(() => {
        remote.retry = null
        if (remote.deadNode === remote.node) remote.deadNode = null
        settle(remote)
      }, RESOLVE_RETRY_MS)
    }
    mesh.ownerOf(remote.peerId).then((owner) => {
      remote.resolving = false
      if (remote.removed || !remote.blocked || remote.inflight > 0 || remote.deadNode !== remote.node) {
        settle(remote)
        return
      }
      // No record: the session is over, unless the instance that served the
      // peer is still alive (a failover to a replica that had not caught up
      // lost the record; that instance rewrites it): keep trying until then.
      if (owner === null && !mesh.liveNodes.includes(remote.deadNode ?? remote.node)) remove(remote)
      else if (owner === null) retry()
      else if (owner !== remote.deadNode) {
        remote.node = owner
        settle(remote)
      } else retry() // not resumed elsewhere yet
    }, () => {
      remote.resolving = false
      retry()
    })
  }

  function send (remote: Remote, env: Envelope): void {
    if (!remote.blocked) {
      publish(remote.node, remote.roomId, [[remote, env]], false)
      return
    }
    if (remote.waiting >= ports.queueMax) {
      ports.orphaned(remote.peerId, remote.roomId, env)
      return
    }
    remote.queued.push(env)
  }

  return {
    /** The store's view of a room (at join or resume): every member on another instance becomes a route. */
    learnRoom (roomId: string, members: Member[]): void {
      // The room is routed from now on, even with no remote member yet: later arrivals are announced.
      if (!byRoom.has(roomId)) byRoom.set(roomId, NO_REMOTES as Map<string, Remote>)
      for (const m of members) {
        if (m.instance !== self) add(roomId, m.peerId, m.instance)
        else {
          // Served here now (it resumed here): frames waiting for it come back to the hub.
          const remote = remotes.get(m.peerId)
          if (remote !== undefined) remove(remote)
        }
      }
    },

    /** This instance has no members left in the room: its routes there go (waiting frames with them). */
    dropRoom (roomId: string): void {
      const room = byRoom.get(roomId)
      if (room === undefined) return
      for (const remote of [...room.values()]) remove(remote)
      byRoom.delete(roomId)
    },

    /** A membership message: `peerId` is served by `node` now ('' = it left the room). */
    moved (roomId: string, peerId: string, node: string): void {
      if (!byRoom.has(roomId)) return
      const remote = remotes.get(peerId)
      if (node === '' || node === self) {
        if (remote !== undefined && remote.roomId === roomId) remove(remote)
        return
      }
      add(roomId, peerId, node)
    },

    /** Whether `peerId` is a known member of `roomId` on another instance. */
    knows (roomId: string, peerId: string): boolean {
      return remotes.get(peerId)?.roomId === roomId
    },

    /** Sends a relay; false when the target is not a known remote member of that room. */
    relay (roomId: string, target: string, env: Envelope): boolean {
      const remote = remotes.get(target)
      if (remote === undefined || remote.roomId !== roomId) return false
      send(remote, env)
      return true
    },

    /** Sends a broadcast frame to every remote member of a room: one publish per instance. */
    broadcast (roomId: string, except: string, envFor: (target: string) => Envelope): void {
      const room = byRoom.get(roomId)
      if (room === undefined) return
      const perNode = new Map<string, Array<[Remote, Envelope]>>()
      for (const remote of room.values()) {
        if (remote.peerId === except) continue
        const env = envFor(remote.peerId)
        if (remote.blocked) {
          send(remote, env)
          continue
        }
        const group = perNode.get(remote.node)
        if (group === undefined) perNode.set(remote.node, [[remote, env]])
        else group.push([remote, env])
      }
      for (const [node, items] of perNode) publish(node, roomId, items, true)
    },

    /** The other instances serving members of a room (for membership messages). */
    nodesOf (roomId: string): Set<string> {
      const out = new Set<string>()
      for (const remote of byRoom.get(roomId)?.values() ?? []) out.add(remote.node)
      return out
    },

    /** Takes the frames waiting for peers whose instance vanished (to park them when this instance exits). */
    takeWaiting (): Array<{ peerId: string, node: string, frames: Envelope[] }> {
      const out: Array<{ peerId: string, node: string, frames: Envelope[] }> = []
      for (const remote of remotes.values()) {
        if (remote.waiting > 0) out.push({ peerId: remote.peerId, node: remote.deadNode ?? remote.node, frames: remote.takeWaiting() })
      }
      return out
    },

    stats (): { remotes: number, waiting: number } {
      let waiting = 0
      for (const remote of remotes.values()) waiting += remote.waiting
      return { remotes: remotes.size, waiting }
    }
  }
}

export type Router = ReturnType<typeof createRouter>
