// Written only against what @hey-api/openapi-ts generates from
// schemas/openapi.json (./hey-api/ in the test's temp dir): the SDK
// functions are named after the operationIds, the /ws frames are the
// ClientMessage and ServerMessage unions of types.gen.ts.
import { client } from './hey-api/client.gen'
import { checkRoom, createRoom, getIceServers, getReady, getRoom } from './hey-api/sdk.gen'
import type { ClientMessage, ServerMessage } from './hey-api/types.gen'
import { Socket, type Report } from './socket'

export async function run (base: string): Promise<Report> {
  client.setConfig({ baseUrl: base })
  const room = await getRoom()
  if (room.data === undefined) throw new Error(`getRoom failed: ${room.response.status}`)
  const roomId = room.data.roomId
  const check = await checkRoom({ body: { roomId } })
  const bad = await createRoom({ body: { roomId: 'not a room id!' } })
  const ready = await getReady()
  const ice = await getIceServers()

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
    const readyFrame = await a.next('ready')

    a.send({ type: 'offer', data: { peerId: bId, offer: { type: 'offer', sdp: 'v=0 hey-api' } } })
    const received = await b.next('offer')
    b.send({ type: 'answer', data: { peerId: aId, answer: { type: 'answer', sdp: 'v=0' } } })
    const answer = await a.next('answer')

    a.send({ type: 'ping', id: 'p1' })
    const pong = await a.next('pong')
    a.send({ type: 'offer', data: { peerId: 'nobody', offer: { type: 'offer', sdp: 'v=0' } } })
    const error = await a.next('error')

    return {
      generator: '@hey-api/openapi-ts',
      roomId,
      aId,
      bId,
      joined: joined.data.success,
      joinReplyId: joined.id,
      peersOfB,
      readyPeer: readyFrame.data.peerId,
      offerFrom: received.data.from,
      offerSdp: received.data.offer.sdp,
      answerFrom: answer.data.from,
      pongId: pong.id,
      errorCode: error.data.code,
      rest: {
        available: check.data?.available,
        badStatus: bad.error?.statusCode,
        badCode: bad.error?.code,
        rateLimitRemaining: room.response.headers.get('x-ratelimit-remaining'),
        ready: ready.data?.status,
        iceServers: ice.data?.iceServers.length
      }
    }
  } finally {
    a.close()
    b.close()
  }
}
