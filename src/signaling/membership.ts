import type { Mesh } from './mesh'
import type { LeaveRetries } from './leave-retries'
import { brief, type LogLimiter } from './log-limiter'
import type { Outbound } from './outbound'
import type { SessionRegistry } from './registry'
import type { Session } from './session'

/*
 * A peer leaving its room: the room hears of it at once, here and on the
 * other instances; the store follows (retried until it lands).
 */

export interface MembershipPorts {
  mesh: Pick<Mesh, 'leaveRoom'>
  registry: SessionRegistry
  outbound: Pick<Outbound, 'broadcast' | 'announce'>
  retries: LeaveRetries
  warnings: LogLimiter
}

export function createMembership ({ mesh, registry, outbound, retries, warnings }: MembershipPorts) {
  /** The peer is no longer in its room: the others hear of it at once, here and elsewhere. */
  function departed (session: Session): string | null {
    const roomId = session.roomId
    if (roomId === null) return null
    outbound.broadcast(roomId, session, 'peer-disconnected', { peerId: session.peerId })
    outbound.announce(roomId, session.peerId, '')
    registry.unbind(session)
    session.log.info({ roomId }, 'left room')
    return roomId
  }

  return {
    departed,

    /**
     * Leaves the room now; the store follows. The peer has left once the room
     * was told, so this never fails: a store write that fails (Redis down) is
     * retried until it lands.
     */
    async leaveRoom (session: Session): Promise<void> {
      const roomId = departed(session)
      if (roomId === null) return
      try {
        await mesh.leaveRoom(roomId, session.peerId)
      } catch (err) {
        const skipped = warnings.take('leave: store unavailable')
        if (skipped !== null) session.log.warn({ error: brief(err), skipped }, 'left the room; the store is told once it is back')
        retries.add(roomId, session.peerId)
      }
    }
  }
}

export type Membership = ReturnType<typeof createMembership>
