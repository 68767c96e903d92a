import type { Mesh } from './mesh'
import type { Clock, TimerHandle } from './types'

/*
 * Leaves the store missed (Redis down). The peer has left once its room was
 * told, so a leave never fails; the store's half is retried here until it
 * lands, so no ghost member stays in the shared room.
 */

/** Retried this often; at most this many are kept (beyond it, the room's TTL cleans up). */
export const LEAVE_RETRY_MS = 2000
const MAX_UNFINISHED_LEAVES = 10_000

export interface LeaveRetryPorts {
  mesh: Pick<Mesh, 'leaveRoom'>
  clock: Clock
  /** Whether the peer is (again) in that room here: then the leave is moot. */
  isIn (peerId: string, roomId: string): boolean
}

export class LeaveRetries {
  private readonly unfinished = new Map<string, { roomId: string, peerId: string }>()
  private timer: TimerHandle | null = null

  constructor (private readonly ports: LeaveRetryPorts) {}

  get size (): number {
    return this.unfinished.size
  }

  add (roomId: string, peerId: string): void {
    if (this.unfinished.size >= MAX_UNFINISHED_LEAVES) return
    this.unfinished.set(`${roomId}\n${peerId}`, { roomId, peerId })
    this.timer ??= this.ports.clock.setTimeout(() => {
      this.retry().finally(() => {
        this.timer = null
        const next = this.unfinished.values().next()
        if (next.done !== true) this.add(next.value.roomId, next.value.peerId) // re-arms the timer
      })
    }, LEAVE_RETRY_MS)
  }

  /** The peer joins that room again: a leave sent after the join must not undo it. */
  cancel (roomId: string, peerId: string): void {
    this.unfinished.delete(`${roomId}\n${peerId}`)
  }

  stop (): void {
    if (this.timer !== null) this.ports.clock.clearTimeout(this.timer)
    this.timer = null
  }

  private async retry (): Promise<void> {
    for (const [key, { roomId, peerId }] of [...this.unfinished]) {
      // Cancelled by a join of that room (on the same connection to the store,
      // so a leave sent before the join is applied before it).
      if (!this.unfinished.has(key)) continue
      if (!this.ports.isIn(peerId, roomId)) {
        try {
          await this.ports.mesh.leaveRoom(roomId, peerId)
        } catch {
          return
        }
      }
      this.unfinished.delete(key)
    }
  }
}
