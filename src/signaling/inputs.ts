import { RELAY_TYPES, type BusMessage } from './bus'
import type { Connection } from './connection'
import type { Fence, FenceScope } from './fence'
import type { Lifecycle } from './lifecycle'
import type { Outbound } from './outbound'
import { frameLabels } from './protocol'
import type { ConnectionHandle } from './types'

/*
 * Every input of the core (a client's frame, a socket's close, a greeting, a
 * message from another instance) passes the fence here: after a stall or a
 * lost link it waits until ownership is settled (fence.ts).
 */

export interface InputPorts {
  fence: Fence | null
  lifecycle: Pick<Lifecycle, 'closed'>
  outbound: Pick<Outbound, 'notify'>
  onMessage (conn: Connection, data: Buffer | string, isBinary: boolean): void
  onBus (msg: BusMessage): void
}

export function createInputs (ports: InputPorts) {
  const { fence, lifecycle } = ports

  /** Runs an input now, or behind the fence (after a stall or a lost link, until ownership is settled). */
  const fenced = fence === null
    ? (_scope: FenceScope, input: () => void): void => input()
    : (scope: FenceScope, input: () => void): void => fence.run(scope, input)

  /** A client message; on a connection whose session moved to another instance, relays are refused there, by id. */
  function clientMessage (conn: Connection, data: Buffer | string, isBinary: boolean): void {
    const session = conn.session
    if (session !== null && session.moved && !isBinary) {
      const { type, id } = frameLabels(typeof data === 'string' ? data : data.toString('utf8'))
      if (type !== undefined && id !== undefined && RELAY_TYPES.has(type)) ports.outbound.notify(session.peerId, 'unavailable', type, id)
      return
    }
    ports.onMessage(conn, data, isBinary)
  }

  /**
   * A socket's events, forwarded to its connection. One small object per
   * connection with the methods on its prototype: closures would cost a
   * function object each, and keep open()'s scope alive with them.
   */
  class Handle implements ConnectionHandle {
    constructor (private readonly conn: Connection) {}

    message (data: Buffer | string, isBinary: boolean): void {
      // No closure per frame unless it has to wait behind the fence: this runs for every message.
      if (fence === null || fence.admits('client')) clientMessage(this.conn, data, isBinary)
      else fence.keep('client', () => clientMessage(this.conn, data, isBinary))
    }

    pong (): void {
      this.conn.awaitingPongs = 0
    }

    closed (code: number): void {
      fenced('client', () => lifecycle.closed(this.conn, code))
    }

    protocolError (): void {
      // ws already sent the close frame (1009 or 1007); the peer is not held for resume.
      if (this.conn.serverClose === null) this.conn.serverClose = 'oversize'
    }
  }

  return {
    fenced,
    /** The handle of a new connection, its events fenced. */
    handle: (conn: Connection): ConnectionHandle => new Handle(conn),
    /** A message from another instance. */
    bus: (msg: BusMessage): void => fenced('bus', () => ports.onBus(msg))
  }
}
