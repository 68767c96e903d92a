import t from 'tap'
import { startServer, type ServerProcess } from './helpers/process'
import { startRedis } from './helpers/redis'
import { connect, type TestClient } from './helpers/ws'

/*
 * LEGACY_LEAVE_ROOM: the PrivyDrop web app leaves with
 * POST /api/leave_room { roomId, socketId } and no token. Real server
 * processes; the two-instance case on a real redis-server.
 */

function post (server: ServerProcess, body: unknown, contentType = 'application/json'): Promise<Response> {
  return fetch(`${server.http}/api/leave_room`, { method: 'POST', headers: { 'content-type': contentType }, body: JSON.stringify(body) })
}

async function createRoom (server: ServerProcess, roomId: string): Promise<void> {
  const res = await fetch(`${server.http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId }) })
  if (!res.ok) throw new Error(`create_room ${res.status}`)
}

async function join (client: TestClient, roomId: string): Promise<{ success: boolean, code?: string }> {
  return (await client.request('join', { roomId }, 'joinResponse')).data
}

const LEFT = { success: true, message: 'Successfully left the room' }

t.test('LEGACY_LEAVE_ROOM=true: { roomId, socketId } leaves the room, the others are told, and the peer can join elsewhere', async (t) => {
  const server = await startServer(t, { LEGACY_LEAVE_ROOM: 'true', DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: 'warn' })
  await createRoom(server, 'legacy-1')
  await createRoom(server, 'legacy-2')
  const a = await connect(t, server.ws)
  const b = await connect(t, server.ws)
  t.equal((await join(a, 'legacy-1')).success, true)
  t.equal((await join(b, 'legacy-1')).success, true)

  t.same(await (await post(server, { roomId: 'legacy-2', socketId: b.peerId })).json(), { success: false, message: 'Peer is not in that room' }, 'another room: nothing happens')
  t.same(await (await post(server, { roomId: 'legacy-1', socketId: 'nobody' })).json(), { success: false, message: 'Peer is not in that room' }, 'an unknown peer: nothing happens')
  t.equal((await post(server, { roomId: 'legacy-1', socketId: 'not a peer id!' })).status, 400, 'socketId is still validated')

  // What the web app's sendBeacon sends: a string, so text/plain.
  const res = await post(server, { roomId: 'legacy-1', socketId: b.peerId }, 'text/plain;charset=UTF-8')
  t.equal(res.status, 200)
  t.same(await res.json(), LEFT)
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId }, 'the other member hears peer-disconnected')
  t.match(await join(b, 'legacy-2'), { success: true }, 'the peer that left joins another room (no already_in_room)')

  t.equal((await post(server, { roomId: 'legacy-1', peerId: a.peerId, token: b.token })).status, 403, 'the token body still checks its token')
  t.same(await (await post(server, { roomId: 'legacy-1', peerId: a.peerId, token: a.token })).json(), LEFT, 'and still works')

  const spec = await (await fetch(`${server.http}/openapi.json`)).json() as { paths: Record<string, any>, components: { schemas: Record<string, unknown> } }
  // The body is a $ref into components.schemas: the union and both of its members.
  const ref = String(spec.paths['/api/leave_room']?.post?.requestBody?.content?.['application/json']?.schema?.$ref)
  t.equal(ref, '#/components/schemas/LeaveRoomOrLegacyBody', 'the body is the union of both shapes')
  const body = JSON.stringify([spec.components.schemas['LeaveRoomOrLegacyBody'], spec.components.schemas['LegacyLeaveRoomBody'], spec.components.schemas['LeaveRoomBody']])
  t.match(body, /socketId/, 'this instance\'s OpenAPI document shows the legacy body')
  t.match(body, /token/, 'next to the token body')
})

t.test('LEGACY_LEAVE_ROOM off (the default): { roomId, socketId } is a 400 and the peer stays', async (t) => {
  const server = await startServer(t, { DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: 'warn' })
  await createRoom(server, 'strict-1')
  await createRoom(server, 'strict-2')
  const a = await connect(t, server.ws)
  const b = await connect(t, server.ws)
  await join(a, 'strict-1')
  await join(b, 'strict-1')

  const res = await post(server, { roomId: 'strict-1', socketId: b.peerId })
  t.equal(res.status, 400)
  t.match(await res.json(), { statusCode: 400, code: 'FST_ERR_VALIDATION' })
  t.match(await join(b, 'strict-2'), { success: false, code: 'already_in_room' }, 'the peer is still in its room')
  t.same(await (await post(server, { roomId: 'strict-1', peerId: b.peerId, token: b.token })).json(), LEFT, 'the token body works')
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId })
  t.equal(a.all('peer-disconnected').length, 1, 'only the token leave was heard')

  const spec = await (await fetch(`${server.http}/openapi.json`)).json() as { paths: Record<string, any> }
  t.notMatch(JSON.stringify(spec.paths['/api/leave_room']?.post?.requestBody), /socketId/, 'the OpenAPI document shows only the token body')
})

t.test('two instances on Redis: a legacy leave sent to the other instance than the peer\'s', async (t) => {
  const redis = await startRedis(t, { own: true })
  const env = { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, LEGACY_LEAVE_ROOM: 'true', DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: 'warn' }
  const [s1, s2] = await Promise.all([startServer(t, { ...env, INSTANCE_ID: 'node1' }), startServer(t, { ...env, INSTANCE_ID: 'node2' })])
  await createRoom(s1, 'mesh-1')
  await createRoom(s1, 'mesh-2')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  t.equal((await join(a, 'mesh-1')).success, true)
  t.equal((await join(b, 'mesh-1')).success, true)
  await a.next('ready') // b's membership has reached a's instance

  t.same(await (await post(s1, { roomId: 'mesh-2', socketId: b.peerId })).json(), { success: false, message: 'Peer is not in that room' }, 'another room: nothing happens')
  const res = await post(s1, { roomId: 'mesh-1', socketId: b.peerId }, 'text/plain;charset=UTF-8')
  t.equal(res.status, 200)
  t.same(await res.json(), LEFT, 'b (on node2) left through node1')
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId }, 'a (on node1) hears peer-disconnected')
  t.match(await join(b, 'mesh-2'), { success: true }, 'b joins another room (no already_in_room)')

  const c = await connect(t, s2.ws)
  t.equal((await join(c, 'mesh-2')).success, true)
  t.same(await (await post(s1, { roomId: 'mesh-2', peerId: c.peerId, token: c.token })).json(), LEFT, 'the token body works across instances too')
  t.same((await b.next('peer-disconnected')).data, { peerId: c.peerId })
})
