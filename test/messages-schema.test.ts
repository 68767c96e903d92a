import t from 'tap'
import { readFileSync } from 'node:fs'
import Ajv from 'ajv'
import { buildTestApp } from './helper'
import { connect, listen, type TestClient } from './helpers/ws'

/*
 * The published messages.schema.json against real traffic: every frame of a
 * session, in both directions, validated by a strict validator against the
 * union of its direction. (One union of both directions would match a client
 * and a server `offer` alike and reject them under oneOf.)
 */

const bundle = JSON.parse(readFileSync('schemas/messages.schema.json', 'utf8')) as Record<string, unknown>

t.test('every frame of a real session validates against ClientMessage or ServerMessage', async (t) => {
  const ajv = new Ajv({ strict: true, allErrors: true })
  ajv.addSchema(bundle)
  const id = bundle['$id'] as string
  const client = ajv.getSchema(`${id}#/definitions/ClientMessage`)
  const server = ajv.getSchema(`${id}#/definitions/ServerMessage`)
  const any = ajv.getSchema(id)
  if (client === undefined || server === undefined || any === undefined) throw new Error('unions missing from the bundle')

  const app = await buildTestApp(t, { STUN_URLS: 'stun:stun.example.org:3478' })
  const { ws } = await listen(t, app)
  const a = await connect(t, ws)
  const b = await connect(t, ws)
  const sent: unknown[] = []
  const send = (c: TestClient, type: string, data: unknown, msgId?: string): void => {
    sent.push(msgId === undefined ? { type, data } : { type, data, id: msgId })
    c.send(type, data, msgId)
  }
  t.equal((await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'schema' } })).statusCode, 200)
  send(a, 'join', { roomId: 'schema' }, 'j1')
  await a.next('joinResponse')
  send(b, 'join', { roomId: 'schema' }, 'j2')
  await b.next('joinResponse')
  await a.next('ready')
  send(a, 'initiator-online', { roomId: 'schema' })
  await b.next('initiator-online')
  send(b, 'recipient-ready', { roomId: 'schema', peerId: b.peerId })
  await a.next('recipient-ready')
  send(a, 'offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 offer' } }, 'o1')
  await b.next('offer')
  send(b, 'answer', { peerId: a.peerId, answer: { type: 'answer', sdp: 'v=0 answer' } })
  await a.next('answer')
  send(a, 'ice-candidate', { peerId: b.peerId, candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'u' } })
  send(a, 'ice-candidate', { peerId: b.peerId, candidate: null })
  await b.next('ice-candidate')
  await b.next('ice-candidate')
  send(a, 'offer', { peerId: 'nobody-here', offer: { type: 'offer', sdp: 'v=0' } }, 'o2')
  await a.next('error')
  send(a, 'no-such-type', {}, 'x1')
  await a.next('error')
  send(b, 'ping', {}, 'p1')
  await b.next('pong')
  send(b, 'leave', { roomId: 'schema' }, 'l1')
  await b.next('leaveResponse')
  await a.next('peer-disconnected')

  const received = [...a.inbox, ...b.inbox]
  const types = new Set(received.map(f => f.type))
  for (const type of ['welcome', 'joinResponse', 'ready', 'initiator-online', 'recipient-ready', 'offer', 'answer', 'ice-candidate', 'error', 'pong', 'leaveResponse', 'peer-disconnected']) {
    t.ok(types.has(type), `the session produced a server ${type}`)
  }
  const failures: string[] = []
  for (const frame of received) {
    if (!server(frame)) failures.push(`server ${frame.type}: ${ajv.errorsText(server.errors)}`)
    if (!any(frame)) failures.push(`server ${frame.type} rejected by the top-level schema`)
  }
  // The frame with an unknown type is the server's to refuse, not the schema's to accept.
  for (const frame of sent.filter(f => (f as { type: string }).type !== 'no-such-type')) {
    if (!client(frame)) failures.push(`client ${(frame as { type: string }).type}: ${ajv.errorsText(client.errors)}`)
    if (!any(frame)) failures.push(`client ${(frame as { type: string }).type} rejected by the top-level schema`)
  }
  t.same(failures, [], `${received.length} server frames and ${sent.length - 1} client frames validate`)
  t.notOk(client({ type: 'no-such-type', data: {} }), 'an unknown type is not a ClientMessage')
  t.notOk(server({ type: 'offer', data: { peerId: 'p', offer: { type: 'offer', sdp: 'v=0' } } }), 'a server offer needs its sender stamped')
})
