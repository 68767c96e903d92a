import type { EndedSession, Mesh } from './mesh'
import type { SessionRegistry } from './registry'
import type { Session } from './session'
import { secretMatches, splitToken } from './tokens'

/*
 * POST /api/leave_room: a peer leaves its room on a REST caller's word,
 * here or on the instance that serves it (through the mesh), or on that
 * instance's behalf when it is gone.
 */

export type LeaveWithTokenResult = 'left' | 'not_in_room' | 'forbidden'

export interface RestLeavePorts {
  mesh: Mesh
  registry: SessionRegistry
  leaveRoom (session: Session): Promise<void>
  /** Sessions ended here on a vanished instance's behalf: tell their rooms. */
  gone (ended: EndedSession[]): void
}

export function createRestLeave ({ mesh, registry, leaveRoom, gone }: RestLeavePorts) {
  /** `proven` checks the caller's proof against the session's stored secret hash. */
  async function leaveOnBehalf (roomId: string, peerId: string, proven: (stored: Buffer | string) => boolean): Promise<LeaveWithTokenResult> {
    const session = registry.get(peerId)
    if (session !== undefined) {
      if (session.ended || !proven(session.secretHash)) return 'forbidden'
      if (session.roomId !== roomId) return 'not_in_room'
      await leaveRoom(session)
      return 'left'
    }
    const record = await mesh.readSession(peerId)
    if (record === null || !proven(record.secret)) return 'forbidden'
    if (record.room !== roomId) return 'not_in_room'
    if (!await mesh.send(record.node, { kind: 'L', origin: mesh.node, peerId, roomId })) {
      // Its instance is gone: end the session here, on that instance's behalf.
      const ended = await mesh.endSession(peerId, record.node)
      if (ended !== null) gone([ended])
    }
    return 'left'
  }

  return {
    /** Leave on behalf of a session that proves itself with its token. */
    async withToken (roomId: string, peerId: string, token: string): Promise<LeaveWithTokenResult> {
      const parts = splitToken(token)
      if (parts === null || parts.peerId !== peerId) return 'forbidden'
      return await leaveOnBehalf(roomId, peerId, stored => secretMatches(parts.secret, stored))
    },

    /**
     * The old body (LEGACY_LEAVE_ROOM): the same leave, wherever the peer is
     * served, on the peer id alone. An unknown or ended peer is simply not in the room.
     */
    async byPeerId (roomId: string, peerId: string): Promise<Exclude<LeaveWithTokenResult, 'forbidden'>> {
      const result = await leaveOnBehalf(roomId, peerId, () => true)
      return result === 'forbidden' ? 'not_in_room' : result
    }
  }
}
