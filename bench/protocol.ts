/*
 * What the workloads need from a signaling protocol, so that the same
 * workloads drive ours (privydrop.ts: the floor and our server) and PeerJS
 * (peerjs.ts). An adapter maps a meeting of two clients and the three relayed
 * kinds onto its protocol's REST calls and frames.
 */
import WebSocket from 'ws'

export interface Endpoint { http: string, ws: string }

/** What a client relays to another; the body is an SDP description or an ICE candidate. */
export type SignalKind = 'offer' | 'answer' | 'candidate'

/** One simulated browser, connected and reachable by the others. */
export interface Client {
  readonly id: string
  /** Sends `body` to the client `to` through the server. */
  signal (kind: SignalKind, to: string, body: object): void
  /** The body of the next relayed message of this kind; call it before the message can arrive. */
  next (kind: SignalKind): Promise<any>
  /** Relayed messages that no `next` is waiting for. */
  onSignal: ((kind: SignalKind, body: any) => void) | null
  close (): Promise<void>
  /** Drops the connection without a closing handshake. */
  terminate (): void
}

export interface Protocol<Meeting = unknown> {
  /** The REST step before two clients meet. */
  meet (http: string): Promise<Meeting>
  /** Opens one side's socket (0 or 1) and makes it reachable within the meeting. */
  enter (ws: string, meeting: Meeting, side: 0 | 1): Promise<Client>
  /** A whole meeting: resolves once `a` can signal `b` and has been told that `b` is there. */
  pair (first: Endpoint, second: Endpoint): Promise<[a: Client, b: Client]>
}

/**
 * Loopback source addresses to spread connections over (127.0.0.2, …): one
 * address has about 28k ephemeral ports towards one server port, so tens of
 * thousands of connections need several. Empty: the system's choice.
 */
export const sourceAddresses: string[] = []
let nextSource = 0

/** A WebSocket carrying one JSON object per text frame, with waits by frame `type`. */
export class JsonSocket {
  readonly ws: WebSocket
  onFrame: ((frame: any) => void) | null = null
  private waiters: Array<{ types: string[], resolve: (frame: any) => void }> = []

  constructor (url: string) {
    const localAddress = sourceAddresses.length === 0 ? undefined : sourceAddresses[nextSource++ % sourceAddresses.length]
    this.ws = new WebSocket(url, { perMessageDeflate: false, ...(localAddress !== undefined && { localAddress }) })
    this.ws.on('error', () => {})
    this.ws.on('message', (raw) => this.dispatch(raw.toString()))
  }

  private dispatch (raw: string): void {
    const frame = JSON.parse(raw) as { type: string }
    const i = this.waiters.findIndex(w => w.types.includes(frame.type))
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1)
      w?.resolve(frame)
      return
    }
    this.onFrame?.(frame)
  }

  /** The next frame of one of these types. */
  wait (types: string | string[], timeoutMs = 20_000): Promise<any> {
    const list = typeof types === 'string' ? [types] : types
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for ${list.join(' or ')}`)), timeoutMs)
      this.waiters.push({ types: list, resolve: (frame) => { clearTimeout(timer); resolve(frame) } })
    })
  }

  send (frame: object): void {
    this.ws.send(JSON.stringify(frame))
  }

  close (): Promise<void> {
    return new Promise(resolve => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve()
      this.ws.once('close', () => resolve())
      this.ws.close(1000)
    })
  }
}
