// Written only against the models @asyncapi/modelina generates from
// schemas/asyncapi.json (into ./modelina/ in the test's temp dir).
import type { ClientMessage } from './modelina/ClientMessage'
import type { ServerMessage } from './modelina/ServerMessage'
import type { ClientOffer } from './modelina/ClientOffer'
import { Socket, type Report } from './socket'

export async function run (base: string): Promise<Report> {
  const created = await fetch(`${base}/api/get_room`)
  const { roomId } = await created.json() as { roomId: string }
  const url = base.replace(/^http/, 'ws') + '/ws'
  const a = new Socket<ServerMessage, ClientMessage>(url)
  const b = new Socket<ServerMessage, ClientMessage>(url)
  try {
    const aId = (await a.next('welcome')).data.peerId
    const bId = (await b.next('welcome')).data.peerId

    a.send({ type: 'join', data: { roomId }, id: 'j1' })
    const joined = await a.next('joinResponse')
    b.send({ type: 'join', data: { roomId } })
    const peersOfB = (await b.next('joinResponse')).data.peers ?? []
    const ready = await a.next('ready')

    const offer: ClientOffer = { type: 'offer', data: { peerId: bId, offer: { type: 'offer', sdp: 'v=0 modelina' } } }
    a.send(offer)
    const received = await b.next('offer')
    b.send({ type: 'answer', data: { peerId: aId, answer: { type: 'answer', sdp: 'v=0' } } })
    const answer = await a.next('answer')

    a.send({ type: 'ping', id: 'p1' })
    const pong = await a.next('pong')
    a.send({ type: 'offer', data: { peerId: 'nobody', offer: { type: 'offer', sdp: 'v=0' } } })
    const error = await a.next('error')

    return {
      generator: 'modelina',
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
