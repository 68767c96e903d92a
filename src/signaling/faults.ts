import type { ConnectionRegistry } from './connection'
import type { Delivery } from './delivery'
import { Fence } from './fence'
import { brief, type LogLimiter } from './log-limiter'
import type { Mesh } from './mesh'
import type { Moves } from './moves'
import type { SessionRegistry } from './registry'
import type { Session } from './session'
import type { Clock, HubLimits, Logger } from './types'

/*
 * What this instance does when the fleet may have moved on without it: after
 * an event-loop stall or a lost Redis link, it checks which sessions are
 * still its own before acting on anything read meanwhile (fence.ts); cut off
 * from Redis for evictAfterMs, it sends its clients to instances that can
 * reach it; when Redis comes back empty, it rewrites what it serves.
 */

/** Inputs kept behind a closed fence at most (a stall together with a Redis outage); beyond it they are dropped with a warning. */
const FENCE_QUEUE_MAX = 200_000
/** A rewrite of the registry that failed is tried again this often. */
const RESTORE_RETRY_MS = 500

export interface FaultPorts {
  mesh: Mesh
  registry: SessionRegistry
  connections: ConnectionRegistry
  delivery: Delivery
  moves: Moves
  clock: Clock
  limits: Pick<HubLimits, 'stallCheckMs' | 'evictAfterMs'>
  warnings: LogLimiter
  log: Logger
  linkHealthy: () => boolean
}

export function createFaults (ports: FaultPorts) {
  const { mesh, registry, delivery, moves, clock, limits, log } = ports
  const self = mesh.node
  /** Set while this instance, cut off from the registry, has sent its clients elsewhere (upgrades are refused meanwhile). */
  let evicted = false
  let evictTimer: ReturnType<Clock['setTimeout']> | null = null

  const recorded = (): Session[] => registry.all().filter(s => s.recorded && !s.ended)
  const entries = (sessions: Session[]) => sessions.map(s => ({ peerId: s.peerId, secret: s.secretHash.toString('hex'), roomId: s.roomId, epoch: s.epoch }))

  /**
   * After a stall or a lost link: asks the registry who owns each recorded
   * session, and lets go of those claimed or ended elsewhere meanwhile, before
   * anything read in the meantime is acted on.
   */
  async function verifyOwnership (): Promise<boolean> {
    const sessions = recorded()
    if (sessions.length === 0) return true
    const found = await mesh.ownersOf(sessions.map(s => s.peerId))
    if (found === null) {
      log.warn({ sessions: sessions.length }, 'the registry lost its data: no session is taken as claimed or ended elsewhere')
      return true
    }
    let lost = 0
    const missing: Session[] = []
    for (const session of sessions) {
      if (registry.get(session.peerId) !== session || session.ended) continue
      const owner = found.owners.get(session.peerId) ?? null
      if (owner === self) continue
      // Never silent long enough to be reaped: nobody ended it, Redis lost it
      // (a failover to a replica that had not caught up). It is rewritten.
      if (owner === null && !found.reapable) {
        missing.push(session)
        continue
      }
      lost++
      lose(session, owner)
    }
    if (missing.length > 0) {
      log.warn({ sessions: missing.length }, 'session records missing though this instance was never silent long enough to be reaped: rewriting them')
      await mesh.restore(entries(missing))
    }
    log.info({ sessions: sessions.length, lost, rewritten: missing.length }, 'session ownership checked')
    return true
  }

  /**
   * A session this instance no longer owns. Claimed by another instance: hand
   * over as a release would (what is held goes there through its sequence
   * check, frames still arriving are passed on, the stale socket is replaced).
   * Ended elsewhere (this instance was reaped): its room was told then; the
   * stale socket is closed so the client starts afresh.
   */
  function lose (session: Session, owner: string | null): void {
    if (owner !== null) {
      moves.release(session.peerId, owner)
      return
    }
    const conn = session.conn
    session.log.info('session was ended elsewhere while this instance could not tell')
    registry.letGo(session)
    delivery.discard(session)
    conn?.end('evicted')
  }

  /** The registry lost its data: rewrite every session this instance serves (connected or held), until it lands. */
  function restoreRegistry (): void {
    const rewritten = entries(recorded())
    mesh.restore(rewritten).then(() => {
      log.warn({ sessions: rewritten.length }, 'rewrote this instance\'s sessions and rooms into the registry')
    }, (err: unknown) => {
      log.warn({ error: brief(err) }, 'could not rewrite the registry yet; retrying')
      clock.setTimeout(restoreRegistry, RESTORE_RETRY_MS)
    })
  }

  /** Cut off from the registry for evictAfterMs: clients go to instances that can reach it. */
  function evict (): void {
    evictTimer = null
    if (!mesh.othersSeen) {
      log.warn('cut off from Redis, but no other instance was seen to take the clients: keeping them')
      return
    }
    evicted = true
    log.warn({ connections: ports.connections.size }, 'cut off from Redis: closing connections with 1012 so clients resume on instances that can reach it')
    for (const conn of ports.connections) conn.end('evicted')
  }

  const fence = limits.stallCheckMs <= 0
    ? null
    : new Fence({
      clock,
      log: log.child({ component: 'fence' }),
      stallMs: limits.stallCheckMs,
      verify: verifyOwnership,
      linkHealthy: ports.linkHealthy,
      queueMax: FENCE_QUEUE_MAX,
      overflow: (scope) => {
        const skipped = ports.warnings.take('fence: queue full')
        if (skipped !== null) log.warn({ scope, skipped }, 'too many inputs waiting for the ownership check; dropped')
      }
    })

  return {
    fence,
    restoreRegistry,

    /** The registry link went down or came back (the Redis link's circuit). */
    linkChanged (healthy: boolean): void {
      if (!healthy) {
        fence?.linkLost()
        if (evictTimer === null && limits.evictAfterMs > 0) evictTimer = clock.setTimeout(evict, limits.evictAfterMs)
        return
      }
      if (evictTimer !== null) clock.clearTimeout(evictTimer)
      evictTimer = null
      if (evicted) log.info('redis reachable again: accepting connections')
      evicted = false
      fence?.linkBack()
    },

    /** False while this instance has sent its clients elsewhere (cut off from Redis): upgrades are refused. */
    accepting (): boolean {
      return !evicted
    }
  }
}

export type Faults = ReturnType<typeof createFaults>
