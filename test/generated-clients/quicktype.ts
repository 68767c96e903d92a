// Written only against the types and converters quicktype generates from the
// definitions of schemas/messages.schema.json (./quicktype/messages.ts in the
// test's temp dir). quicktype merges a oneOf into one interface by design, so
// this client names its own union of the generated per-message types, and
// checks every frame it reads with quicktype's runtime converters.
import {
  Convert, type ClientAnswer, type ClientJoin, type ClientOffer, type ClientPing,
  type ServerAnswer, type ServerError, type ServerJoinResponse, type ServerOffer, type ServerPong, type ServerReady, type ServerWelcome
} from './quicktype/messages'
import { Socket, type Report } from './socket'

type Incoming = ServerWelcome | ServerJoinResponse | ServerReady | ServerOffer | ServerAnswer | ServerPong | ServerError | { type: 'other' }
type Outgoing = ClientJoin | ClientOffer | ClientAnswer | ClientPing

function parse (raw: string): Incoming {
  const { type } = JSON.parse(raw) as { type: string }
  switch (type) {
    case 'welcome': return Convert.toServerWelcome(raw)
    case 'joinResponse': return Convert.toServerJoinResponse(raw)
    case 'ready': return Convert.toServerReady(raw)
    case 'offer': return Convert.toServerOffer(raw)
    case 'answer': return Convert.toServerAnswer(raw)
    case 'pong': return Convert.toServerPong(raw)
    case 'error': return Convert.toServerError(raw)
    default: return { type: 'other' }
  }
}

export async function run (base: string): Promise<Report> {
  const created = await fetch(`${base}/api/get_room`)
  const { roomId } = await created.json() as { roomId: string }
  const url = base.replace(/^http/, 'ws') + '/ws'
  const a = new Socket<Incoming, Outgoing>(url, parse)
  const b = new Socket<Incoming, Outgoing>(url, parse)
  try {
    const aId = (await a.next('welcome')).data.peerId
    const bId = (await b.next('welcome')).data.peerId

    a.send({ type: 'join', data: { roomId }, id: 'j1' })
    const joined = await a.next('joinResponse')
    b.send({ type: 'join', data: { roomId } })
    const peersOfB = (await b.next('joinResponse')).data.peers ?? []
    const ready = await a.next('ready')

    a.send({ type: 'offer', data: { peerId: bId, offer: { type: 'offer', sdp: 'v=0 quicktype' } } })
    const received = await b.next('offer')
    b.send({ type: 'answer', data: { peerId: aId, answer: { type: 'answer', sdp: 'v=0' } } })
    const answer = await a.next('answer')

    a.send({ type: 'ping', id: 'p1' })
    const pong = await a.next('pong')
    a.send({ type: 'offer', data: { peerId: 'nobody', offer: { type: 'offer', sdp: 'v=0' } } })
    const error = await a.next('error')

    return {
      generator: 'quicktype',
      roomId,
      aId,
      bId,
      joined: joined.data.success,
      joinReplyId: joined.id,
      peersOfB,
      readyPeer: ready.data.peerId,
      offerFrom: received.data.from,
      offerSdp: received.data.offer.sdp,
      answerFrom: answer.data.from,
      pongId: pong.id,
      errorCode: error.data.code,
      rest: {}
    }
  } finally {
    a.close()
    b.close()
  }
}
