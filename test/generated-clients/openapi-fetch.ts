// Written only against what openapi-typescript generates from
// schemas/openapi.json (./openapi-typescript/schema.ts in the test's temp
// dir, with root types) and openapi-fetch: the REST calls are typed by
// `paths`, the /ws frames by the ClientMessage and ServerMessage unions.
import createClient from 'openapi-fetch'
import type { paths, ClientMessage, ServerMessage, ErrorResponse } from './openapi-typescript/schema'
import { Socket, type Report } from './socket'

export async function run (base: string): Promise<Report> {
  const api = createClient<paths>({ baseUrl: base })
  const room = await api.GET('/api/get_room')
  if (room.data === undefined) throw new Error(`get_room failed: ${room.response.status}`)
  const roomId = room.data.roomId
  const check = await api.POST('/api/check_room', { body: { roomId } })
  const bad = await api.POST('/api/create_room', { body: { roomId: 'not a room id!' } })
  const badError: ErrorResponse | undefined = bad.error
  const ready = await api.GET('/ready')
  const ice = await api.GET('/api/ice_servers')

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

    a.send({ type: 'offer', data: { peerId: bId, offer: { type: 'offer', sdp: 'v=0 openapi-typescript' } } })
    const received = await b.next('offer')
    b.send({ type: 'answer', data: { peerId: aId, answer: { type: 'answer', sdp: 'v=0' } } })
    const answer = await a.next('answer')

    a.send({ type: 'ping', id: 'p1' })
    const pong = await a.next('pong')
    a.send({ type: 'offer', data: { peerId: 'nobody', offer: { type: 'offer', sdp: 'v=0' } } })
    const error = await a.next('error')

    return {
      generator: 'openapi-typescript + openapi-fetch',
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
        badStatus: badError?.statusCode,
        badCode: badError?.code,
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
