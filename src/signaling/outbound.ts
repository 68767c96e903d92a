import type { ErrorCode, ServerData, ServerMessageType } from '../../schemas/ws'
import { RELAY_TYPES, type BusMessage, type Envelope, type RefusalCode } from './bus'
import type { Delivery } from './delivery'
import type { Forwards } from './forwards'
import { brief, type LogLimiter } from './log-limiter'
import type { Mesh } from './mesh'
import { errorText, frame } from './protocol'
import type { SessionRegistry } from './registry'
import type { Router } from './router'
import type { Session } from './session'
import type { Clock, Logger, SignalingMetrics } from './types'

/*
 * What this instance tells peers and other instances on its own account:
 * replies and errors to a peer, refusals of relays (to their senders,
 * wherever they are served now), broadcasts to a room, membership
 * announcements, and messages to other instances nobody waits on.
 */

/** A refusal the mesh could not carry is tried again this often, this many times in all. */
const REFUSAL_RETRY_MS = 500
const REFUSAL_ATTEMPTS = 30

export interface OutboundPorts {
  mesh: Mesh
  registry: SessionRegistry
  forwards: Forwards
  router: Router
  delivery: Delivery
  clock: Clock
  metrics: SignalingMetrics
  warnings: LogLimiter
  log: Logger
}

export function createOutbound (ports: OutboundPorts) {
  const { mesh, registry, forwards, router, delivery, metrics, warnings } = ports
  const self = mesh.node

  /** A direct reply to a peer's own message: to its socket, or held with the rest while it is away. */
  function send<T extends ServerMessageType> (session: Session, type: T, data: ServerData<T>, id?: string): void {
    const text = frame(type, data, id)
    const conn = session.conn
    if (conn !== null && conn.writable && session.inbox.held.length === 0) {
      conn.transport.send(text)
      metrics.messageOut(type)
    } else if (session.roomId !== null || (conn !== null && conn.writable)) {
      // Away, or frames wait for a slow socket: the reply waits its turn behind them.
      delivery.deliver(session, { frame: text, type, from: '', id: '', epoch: 0, seq: 0, origin: self })
    }
  }

  function sendError (session: Session, code: ErrorCode, extra: { type?: string, id?: string, message?: string } = {}): void {
    metrics.error(code)
    const data: ServerData<'error'> = { code, message: extra.message ?? errorText(code) }
    if (extra.type !== undefined) data.type = extra.type
    send(session, 'error', data, extra.id)
  }

  /**
   * An error for a sender about one of its relays: to it here, or on to the
   * instance it moved to (a refusal must reach the sender wherever it is now).
   */
  function notify (peerId: string, code: RefusalCode, type: string, id: string): void {
    const sender = registry.get(peerId)
    if (sender !== undefined && !sender.moved) {
      sendError(sender, code, { type, id: id === '' ? undefined : id })
      return
    }
    const node = forwards.forwardTo(peerId)
    if (node !== undefined && node !== self) postUntilCarried(node, { kind: 'R', origin: self, from: peerId, type, id, code })
  }

  /** A relay refused where it stands: its sender hears `code` by id, wherever it is. */
  function refuse (env: Envelope, code: RefusalCode): void {
    if (!RELAY_TYPES.has(env.type) || env.from === '') return
    if (env.origin === self) notify(env.from, code, env.type, env.id)
    else if (code === 'peer_not_found') postUntilCarried(env.origin, { kind: 'F', origin: self, from: env.from, type: env.type, id: env.id })
    else postUntilCarried(env.origin, { kind: 'R', origin: self, from: env.from, type: env.type, id: env.id, code })
  }

  /**
   * A refusal is the sender's only word on a relay it was told nothing else
   * about: while the mesh cannot carry it (a link that just came back from a
   * stall or an outage), it is tried again, not dropped.
   */
  function postUntilCarried (node: string, msg: BusMessage, attempt = 0): void {
    mesh.send(node, msg).catch(() => {
      if (attempt + 1 >= REFUSAL_ATTEMPTS) {
        const skipped = warnings.take('refusal: mesh unreachable')
        if (skipped !== null) ports.log.warn({ node, kind: msg.kind, skipped }, 'could not tell another instance of a refusal; gave up')
        return
      }
      ports.clock.setTimeout(() => postUntilCarried(node, msg, attempt + 1), REFUSAL_RETRY_MS)
    })
  }

  /** Sends to another instance where nobody waits for the answer; failures are logged. */
  function post (node: string, msg: BusMessage): Promise<boolean> {
    return mesh.send(node, msg).catch((err: unknown) => {
      const skipped = warnings.take('post: mesh unreachable')
      if (skipped !== null) ports.log.warn({ error: brief(err), node, kind: msg.kind, skipped }, 'could not reach another instance')
      return false
    })
  }

  return {
    send,
    sendError,
    notify,
    refuse,
    post,

    /** A relay that will never reach its target: its sender hears peer_not_found, wherever it is. */
    undeliverable (env: Envelope): void {
      refuse(env, 'peer_not_found')
    },

    /** Sends one server frame to every other member of a room, here and on other instances. */
    broadcast<T extends ServerMessageType> (roomId: string, sender: Session, type: T, data: ServerData<T>): void {
      const env: Envelope = { frame: frame(type, data), type, from: sender.peerId, id: '', epoch: sender.epoch, seq: 0, origin: self }
      for (const member of registry.members(roomId)) if (member !== sender) delivery.deliver(member, { ...env, seq: sender.nextSeq(member.peerId) })
      router.broadcast(roomId, sender.peerId, target => ({ ...env, seq: sender.nextSeq(target) }))
    },

    /** Tells the other instances in a room where a member is served now ('' = it left). */
    announce (roomId: string, peerId: string, node: string): void {
      for (const other of router.nodesOf(roomId)) post(other, { kind: 'M', origin: self, roomId, peerId, node })
    }
  }
}

export type Outbound = ReturnType<typeof createOutbound>
