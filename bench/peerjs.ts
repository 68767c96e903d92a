/*
 * The PeerJS protocol (npm `peer` 1.0.2, served by peerjs-server.ts at path
 * '/', key 'peerjs'), spoken the way the PeerJS browser client speaks it.
 *
 * PeerJS has no rooms. A meeting is what two PeerJS clients do instead: each
 * fetches an id over REST (`GET /peerjs/id`); entering is opening
 * `/peerjs?key=…&id=…&token=…` and waiting for `OPEN`. The ids reach each
 * other out of band (the application shares them), so nothing tells `a` that
 * `b` is there. Relayed frames are `{ type, payload, dst }`, forwarded as they
 * are with `src` added. Like the client, every socket sends `HEARTBEAT` every
 * 5 s (the server drops a client silent for `alive_timeout`, 90 s by default).
 */
import { JsonSocket, type Client, type Endpoint, type Protocol, type SignalKind } from './protocol'

export const PEERJS_KEY = 'peerjs'
/** The PeerJS client's default `pingInterval`. */
const HEARTBEAT_MS = 5000

const TYPE = { offer: 'OFFER', answer: 'ANSWER', candidate: 'CANDIDATE' } as const
const KIND: Record<string, SignalKind> = { OFFER: 'offer', ANSWER: 'answer', CANDIDATE: 'candidate' }
/** Where the PeerJS client puts the body in `payload`. */
const FIELD = { offer: 'sdp', answer: 'sdp', candidate: 'candidate' } as const

/** The URLs of a PeerJS server mounted at '/': REST at /peerjs/…, the socket at /peerjs. */
export function peerjsEndpoint (port: number): Endpoint {
  return { http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/peerjs?key=${PEERJS_KEY}` }
}

class PeerJsClient implements Client {
  onSignal: ((kind: SignalKind, body: any) => void) | null = null
  private readonly heartbeat: NodeJS.Timeout

  constructor (readonly id: string, private readonly socket: JsonSocket) {
    socket.onFrame = (frame) => {
      const kind = KIND[frame.type]
      if (kind !== undefined) this.onSignal?.(kind, frame.payload?.[FIELD[kind]])
    }
    this.heartbeat = setInterval(() => socket.send({ type: 'HEARTBEAT' }), HEARTBEAT_MS).unref()
    socket.ws.once('close', () => clearInterval(this.heartbeat))
  }

  static async open (url: string, id: string): Promise<PeerJsClient> {
    // The client's token: a random string that lets the same id reconnect.
    const token = Math.random().toString(36).slice(2)
    const socket = new JsonSocket(`${url}&id=${encodeURIComponent(id)}&token=${token}`)
    const first = await socket.wait(['OPEN', 'ERROR', 'ID-TAKEN'])
    if (first.type !== 'OPEN') throw new Error(`PeerJS ${first.type}: ${JSON.stringify(first.payload)}`)
    return new PeerJsClient(id, socket)
  }

  signal (kind: SignalKind, to: string, body: object): void {
    this.socket.send({ type: TYPE[kind], payload: { [FIELD[kind]]: body }, dst: to })
  }

  async next (kind: SignalKind): Promise<any> {
    return (await this.socket.wait(TYPE[kind])).payload[FIELD[kind]]
  }

  close (): Promise<void> {
    clearInterval(this.heartbeat)
    return this.socket.close()
  }

  terminate (): void {
    clearInterval(this.heartbeat)
    this.socket.ws.terminate()
  }
}

/** `GET /peerjs/id`, with the client's cache-busting `ts`. */
async function fetchId (http: string): Promise<string> {
  const res = await fetch(`${http}/${PEERJS_KEY}/id?ts=${Date.now()}${Math.random()}`)
  if (!res.ok) throw new Error(`GET /${PEERJS_KEY}/id ${res.status}`)
  return await res.text()
}

export const peerjs: Protocol<[string, string]> = {
  async meet (http) {
    return await Promise.all([fetchId(http), fetchId(http)])
  },
  async enter (ws, ids, side) {
    return await PeerJsClient.open(ws, ids[side])
  },
  async pair (first: Endpoint, second: Endpoint) {
    const ids = await this.meet(first.http)
    return await Promise.all([PeerJsClient.open(first.ws, ids[0]), PeerJsClient.open(second.ws, ids[1])])
  }
}
