import { PROTOCOL_VERSION } from '../../schemas/ws'
import type { IceServer } from '../../schemas/rest'
import type { Connection, ConnectionRegistry } from './connection'
import type { Delivery } from './delivery'
import { brief, type LogLimiter } from './log-limiter'
import type { Mesh } from './mesh'
import type { Moves } from './moves'
import { frame } from './protocol'
import type { SessionRegistry } from './registry'
import type { Session } from './session'
import { issueToken, splitToken } from './tokens'
import type { HubLimits, Logger, SignalingMetrics } from './types'

/*
 * Sessions starting, resuming, dropping and ending on this instance (the
 * transitions themselves are Session's): a socket is greeted with a new
 * session or the one its token resumes (here, or taken over from another
 * instance); a drop holds the session for the grace; a clean close, a kick
 * or an expired grace ends it, shared record first.
 */

/** A session whose end found it claimed elsewhere waits this long for the new owner's release. */
const RELEASE_WAIT_MS = 5000
/** While the registry cannot be reached, an expired grace is looked at again this often (the session may have been claimed elsewhere). */
const GRACE_RECHECK_MS = 1000

export interface LifecyclePorts {
  mesh: Mesh
  registry: SessionRegistry
  connections: ConnectionRegistry
  delivery: Delivery
  moves: Moves
  limits: Pick<HubLimits, 'heartbeatMs' | 'resumeGraceMs'>
  metrics: SignalingMetrics
  warnings: LogLimiter
  log: Logger
  iceServers: (peerId: string) => IceServer[]
  /** Whether the registry (Redis) answers now: while it does not, held sessions do not expire. */
  linkHealthy: () => boolean
  countChanged: (ip: string) => void
  /** The peer left its room (the room is told here and elsewhere). */
  departed (session: Session): void
  /** Messages that waited for the connection's session to be settled can run now. */
  drain (conn: Connection): void
}

export function createLifecycle (ports: LifecyclePorts) {
  const { mesh, registry, delivery, moves, metrics, warnings } = ports
  const self = mesh.node

  /** Binds a connection to its session and greets it: welcome first, then anything held. */
  function attach (conn: Connection, session: Session, token: string, resumed: boolean): void {
    conn.session = session
    if (conn.closedCode !== null) {
      // The socket went away while the resume was looked up.
      if (resumed) hold(session)
      else end(session)
      return
    }
    const replaced = session.attach(conn)
    if (replaced === false) return
    registry.unhold(session)
    // A half-open old connection is taken over.
    replaced?.end('replaced')
    conn.transport.send(frame('welcome', {
      peerId: session.peerId,
      protocol: PROTOCOL_VERSION,
      heartbeatMs: ports.limits.heartbeatMs,
      resumeToken: token,
      iceServers: ports.iceServers(session.peerId)
    }))
    metrics.messageOut('welcome')
    if (resumed) {
      metrics.resume()
      session.log.info({ delivered: delivery.flushHeld(session) }, 'session resumed')
    } else {
      session.log.debug('connected')
    }
  }

  /** The connection dropped without a clean close: keep the identity and room for the grace. */
  function hold (session: Session): void {
    // Nothing to resume without a room.
    if (session.roomId === null || ports.limits.resumeGraceMs === 0) {
      end(session)
      return
    }
    session.log.info({ graceMs: ports.limits.resumeGraceMs }, 'connection dropped, holding session for resume')
    registry.hold(session)
    const expire = (): void => {
      // Cut off from the registry, this instance cannot tell whether the peer
      // resumed elsewhere meanwhile, nor end the session there: it waits.
      if (!ports.linkHealthy()) {
        session.hold(GRACE_RECHECK_MS, expire)
        return
      }
      registry.unhold(session)
      session.log.info('resume grace expired')
      end(session)
    }
    session.hold(ports.limits.resumeGraceMs, expire)
  }

  /** The session is over for good (clean close, grace expired, kicked). */
  function end (session: Session): void {
    if (!session.end()) return
    registry.unhold(session)
    if (!session.recorded) {
      // Never in a room: nothing shared to end, nobody to tell.
      finish(session)
      return
    }
    // The shared record goes first (with the room membership, in one step),
    // so once the room hears of the departure the token resumes nowhere.
    mesh.endSession(session.peerId).then((ended) => {
      if (ended !== null) finish(session)
      else {
        // Claimed by another instance meanwhile: its release (with the handover) is on its way.
        session.log.info('session resumed elsewhere as it ended here; waiting for the release')
        session.awaitRelease(RELEASE_WAIT_MS, () => { releaseMissed(session) })
      }
    }, (err: unknown) => {
      const skipped = warnings.take('end session: store unavailable')
      if (skipped !== null) session.log.warn({ error: brief(err), skipped }, 'could not end the session in the store; its entries expire with their TTL')
      finish(session)
    })
  }

  function finish (session: Session): void {
    session.finish()
    ports.countChanged(session.ip)
    registry.remove(session)
    delivery.discard(session)
    ports.departed(session)
  }

  /**
   * The session was not ours to end, and no release came: ask who owns it.
   * Another instance → hand over to it as a release would. Nobody → whoever
   * ended it told the room; only what was held here is refused.
   */
  function releaseMissed (session: Session): void {
    if (registry.get(session.peerId) !== session) return
    const letGo = (): void => {
      registry.letGo(session)
      delivery.discard(session)
    }
    mesh.ownerOf(session.peerId).then((owner) => {
      if (registry.get(session.peerId) !== session) return
      if (owner !== null && owner !== self) moves.release(session.peerId, owner)
      else letGo()
    }, letGo)
  }

  /** Resumes the session a token names (here, or taken over from another instance), or starts a new one. */
  function greet (conn: Connection, ctx: { ip: string, resumeToken?: string }): void {
    const token = ctx.resumeToken
    const local = token === undefined ? undefined : registry.forToken(token)
    if (local !== undefined) {
      const issued = issueToken(local.peerId)
      local.rotate(issued.hash)
      if (local.roomId !== null) {
        mesh.rotateSecret(local.peerId, issued.hash.toString('hex')).catch((err: unknown) => {
          const skipped = warnings.take('rotate: store unavailable')
          if (skipped !== null) local.log.warn({ error: brief(err), skipped }, 'rotated token not recorded in the store; it works on this instance only')
        })
      }
      attach(conn, local, issued.token, true)
    } else if (token !== undefined && splitToken(token) !== null) {
      // The session may live on another instance: frames wait until it is settled.
      conn.busy = true
      moves.resume(token, ctx.ip)
        .catch((err: unknown) => {
          const skipped = warnings.take('resume: store unavailable')
          if (skipped !== null) ports.log.warn({ error: brief(err), skipped }, 'resume lookup failed; the client is told to try again (1013)')
          return 'retry' as const
        })
        .then((found) => {
          // Not knowing is not "no such session": a new identity would lose the peer's room for nothing.
          if (found === 'retry') conn.end('retry')
          else if (found !== null) attach(conn, found.session, found.token, true)
          else {
            const created = registry.fresh(ctx.ip)
            attach(conn, created.session, created.token, false)
          }
          conn.busy = false
          ports.drain(conn)
        })
        .catch((err: unknown) => ports.log.error({ err }, 'attaching a connection failed'))
    } else {
      const created = registry.fresh(ctx.ip)
      attach(conn, created.session, created.token, false)
    }
  }

  return {
    greet,
    hold,
    end,

    /** The socket closed: its session is held for resume (a drop) or ended (a clean close, a kick). */
    closed (conn: Connection, code: number): void {
      ports.connections.remove(conn)
      conn.closedCode = code
      ports.countChanged(conn.ip)
      metrics.closed(conn.closeReason)
      const session = conn.session
      if (session === null) return // still resolving a resume: attach() sees closedCode
      if (!session.detach(conn)) return // replaced by a resumed connection: nothing to do
      if (session.ended) return // let go of already (it lives on elsewhere, or is over)
      if (conn.holdsSession) hold(session)
      else {
        session.log.info({ code, reason: conn.serverClose }, 'connection closed')
        end(session)
      }
    }
  }
}

export type Lifecycle = ReturnType<typeof createLifecycle>
