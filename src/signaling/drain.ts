import type { ConnectionRegistry } from './connection'
import type { Mesh } from './mesh'
import type { Moves } from './moves'
import type { SessionRegistry } from './registry'
import type { Router } from './router'
import type { Clock, Logger } from './types'

/*
 * Leaving the fleet: shutdown closes every socket so its client resumes
 * elsewhere; drain keeps serving the sessions held for resume until they
 * have moved, parks what is left for whichever instance they resume on, and
 * leaves the mesh.
 */

/** How often shutdown and drain look again at what is left. */
const POLL_MS = 20

export interface DrainPorts {
  mesh: Mesh
  registry: SessionRegistry
  connections: ConnectionRegistry
  router: Router
  moves: Moves
  clock: Clock
  log: Logger
}

export function createDrain ({ mesh, registry, connections, router, moves, clock, log }: DrainPorts) {
  const sleep = (ms: number): Promise<void> => new Promise(resolve => { clock.setTimeout(resolve, ms) })

  return {
    /**
     * Closes every socket with 1001 so clients reconnect (and resume)
     * elsewhere; sockets whose peer does not finish the closing handshake
     * within `waitMs` are terminated, so shutdown never hangs on them.
     */
    async shutdown (waitMs: number): Promise<void> {
      for (const conn of connections) conn.end('shutdown')
      const deadline = clock.now() + waitMs
      while (connections.size > 0 && clock.now() < deadline) await sleep(POLL_MS)
      for (const conn of connections) conn.transport.terminate()
    },

    /**
     * After shutdown: keeps serving the sessions held for resume (buffering,
     * handing over, forwarding) until they have all moved to other instances
     * or ended, within `budgetMs`. What is still held then is parked on the
     * mesh for whichever instance the peer resumes on; then this instance
     * stops receiving and leaves the mesh, which decides what becomes of the
     * sessions left (a survivor ends them after the grace; a lone instance
     * ends them now).
     */
    async drain (budgetMs: number): Promise<void> {
      // Waiting only helps when another instance can take the sessions over.
      const deadline = clock.now() + (await mesh.othersAlive().catch(() => false) ? budgetMs : 0)
      while ((registry.size > 0 || router.stats().waiting > 0) && clock.now() < deadline) await sleep(POLL_MS)
      const leftovers = registry.all()
      await moves.parkAll(leftovers)
      await mesh.stop()
      // Whatever arrived until the subscription ended goes the same way.
      await moves.parkAll(leftovers)
      for (const session of leftovers) session.letGo()
      if (leftovers.length > 0) log.info({ sessions: leftovers.length }, 'left sessions for resume on other instances')
      await mesh.leave(leftovers.filter(s => s.recorded).map(s => ({ peerId: s.peerId, roomId: s.roomId })))
    }
  }
}
