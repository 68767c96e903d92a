/*
 * Our protocol (docs/protocol.md), spoken by the floor and by our server: a
 * meeting is a room created over REST, entering is connect (`welcome`) and
 * join; the second join tells the first peer with `ready`.
 */
import { randomBytes } from 'node:crypto'
import { JsonSocket, type Client, type Endpoint, type Protocol, type SignalKind } from './protocol'

const TYPE = { offer: 'offer', answer: 'answer', candidate: 'ice-candidate' } as const
const KIND: Record<string, SignalKind> = { offer: 'offer', answer: 'answer', 'ice-candidate': 'candidate' }

class Peer implements Client {
  id = ''
  onSignal: ((kind: SignalKind, body: any) => void) | null = null

  constructor (readonly socket: JsonSocket) {
    // Relayed frames carry the body under the kind's own name: data.offer, data.answer, data.candidate.
    socket.onFrame = (frame) => {
      const kind = KIND[frame.type]
      if (kind !== undefined) this.onSignal?.(kind, frame.data[kind])
    }
  }

  static async open (url: string): Promise<Peer> {
    const peer = new Peer(new JsonSocket(url))
    const welcome = await peer.socket.wait('welcome')
    peer.id = welcome.data.peerId
    return peer
  }

  async join (roomId: string): Promise<void> {
    const reply = this.socket.wait('joinResponse')
    this.socket.send({ type: 'join', data: { roomId }, id: 'j' })
    const res = await reply
    if (res.data.success !== true) throw new Error(`join failed: ${JSON.stringify(res.data)}`)
  }

  signal (kind: SignalKind, to: string, body: object): void {
    this.socket.send({ type: TYPE[kind], data: { peerId: to, [kind]: body } })
  }

  async next (kind: SignalKind): Promise<any> {
    return (await this.socket.wait(TYPE[kind])).data[kind]
  }

  close (): Promise<void> {
    return this.socket.close()
  }

  terminate (): void {
    this.socket.ws.terminate()
  }
}

async function createRoom (http: string, roomId: string): Promise<void> {
  const res = await fetch(`${http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId }) })
  if (!res.ok) throw new Error(`create_room ${res.status}`)
  await res.arrayBuffer()
}

const roomName = () => randomBytes(9).toString('base64url').replace(/[^A-Za-z0-9]/g, 'x')

export const privydrop: Protocol<string> = {
  async meet (http) {
    const roomId = roomName()
    await createRoom(http, roomId)
    return roomId
  },
  async enter (ws, roomId) {
    const peer = await Peer.open(ws)
    await peer.join(roomId)
    return peer
  },
  async pair (first: Endpoint, second: Endpoint) {
    const roomId = await this.meet(first.http)
    const [a, b] = await Promise.all([Peer.open(first.ws), Peer.open(second.ws)])
    await a.join(roomId)
    const ready = a.socket.wait('ready')
    await b.join(roomId)
    await ready
    return [a, b]
  }
}
