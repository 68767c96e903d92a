import t, { type Test } from 'tap'
import { startRedis, type TestRedis } from './helpers/redis'
import { linesWith, outputBefore, postJson, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { until } from './helper'

/*
 * During a Redis outage, with real server processes: answers stay truthful
 * (a leave that happened locally is reported as done, and the store catches
 * up when Redis is back) and a client cannot turn the outage into a log flood.
 */

async function cluster (t: Test, count: number, env: Record<string, string> = {}): Promise<{ redis: TestRedis, servers: ServerProcess[] }> {
  const redis = await startRedis(t, { own: true })
  const servers = await Promise.all(Array.from({ length: count }, (_, i) => startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: `node${i + 1}`,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    REDIS_CONNECT_TIMEOUT_MS: '500',
    LOG_LEVEL: 'warn',
    ...env
  })))
  return { redis, servers }
}

t.test('POST /api/leave_room while Redis is down: the peer leaves and is told so; the store catches up once Redis is back', async (t) => {
  const { redis, servers: [s1] } = await cluster(t, 1)
  if (s1 === undefined) throw new Error('a server expected')
  t.equal((await postJson(s1, '/api/create_room', { roomId: 'bye' })).status, 200)
  const x = await connect(t, s1.ws)
  const y = await connect(t, s1.ws)
  await join(x, 'bye')
  await join(y, 'bye')
  await redis.stop()

  const res = await postJson(s1, '/api/leave_room', { roomId: 'bye', peerId: x.peerId, token: x.token })
  t.equal(res.status, 200, 'answered as what happened: the peer left')
  t.same(await res.json(), { success: true, message: 'Successfully left the room' })
  t.same((await y.next('peer-disconnected')).data, { peerId: x.peerId }, 'the room was told')
  const again = await postJson(s1, '/api/leave_room', { roomId: 'bye', peerId: x.peerId, token: x.token })
  t.same(await again.json(), { success: false, message: 'Peer is not in that room' }, 'a retry hears it is already out')
})

t.test('a leave the store missed (Redis hung) is written once Redis answers again: no ghost member', async (t) => {
  const { redis, servers: [s1] } = await cluster(t, 1)
  if (s1 === undefined) throw new Error('a server expected')
  t.equal((await postJson(s1, '/api/create_room', { roomId: 'ghost' })).status, 200)
  const x = await connect(t, s1.ws)
  const y = await connect(t, s1.ws)
  await join(x, 'ghost')
  await join(y, 'ghost')
  const members = async (): Promise<string[]> => (await redis.client.smembers(`${redis.prefix}room:ghost:sockets`)).sort()
  t.same(await members(), [x.peerId, y.peerId].sort())

  redis.pause()
  t.teardown(() => redis.resume())
  const left = await x.request('leave', { roomId: 'ghost' }, 'leaveResponse')
  t.same(left.data, { success: true, roomId: 'ghost' }, 'the peer has left (its room was told)')
  t.same((await y.next('peer-disconnected')).data, { peerId: x.peerId })
  redis.resume()
  t.ok(await until(async () => (await members()).length === 1, 10_000), 'the store catches up: the membership goes')
  t.same(await members(), [y.peerId])
})

t.test('a client cannot flood the logs through an outage: repeated warnings are aggregated, without stacks', async (t) => {
  // LOG_LEVEL info: the request lines are what outputBefore orders the count after.
  const { redis, servers: [s1, s2] } = await cluster(t, 2, { WS_RATE_PER_S: '100000', WS_RATE_BURST: '100000', WS_ABUSE_MAX_DROPS: '100000', LOG_LEVEL: 'info' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  t.equal((await postJson(s1, '/api/create_room', { roomId: 'noisy' })).status, 200)
  const x = await connect(t, s1.ws)
  const y = await connect(t, s2.ws)
  await join(x, 'noisy')
  await join(y, 'noisy')
  await x.next('ready')
  await redis.stop()

  const count = 200
  for (let i = 0; i < count; i++) x.send('offer', { peerId: y.peerId, offer: { type: 'offer', sdp: 'v=0' } }, `o${i}`)
  t.ok(await until(() => x.all('error').length === count, 10_000), 'every relay answered')
  t.same([...new Set(x.all('error').map(f => f.data.code))], ['unavailable'])
  // The failure was logged, but not once per relay. Every relay has been
  // answered, each after its warning (if any) was written: all of them are in
  // what s1 logged before a request sent now.
  const logged = await outputBefore(s1)
  const warned = linesWith(logged, 'could not reach another instance')
  t.ok(warned.length >= 1 && warned.length <= 3, `${count} failed relays, ${warned.length} warning line(s)`)
  t.same(linesWith(logged, '"stack"'), [], 'no stack traces for an expected outage')
})

t.test('frames refused for a full resume buffer are logged once per window, with a count', async (t) => {
  // LOG_LEVEL info: the request lines are what outputBefore orders the count after.
  const server = await startServer(t, { LOG_LEVEL: 'info', DISABLE_JOIN_RATE_LIMIT: 'true', RESUME_BUFFER_MAX: '2', RESUME_GRACE_MS: '60000', WS_RATE_PER_S: '100000', WS_RATE_BURST: '100000' })
  t.equal((await postJson(server, '/api/create_room', { roomId: 'full' })).status, 200)
  const a = await connect(t, server.ws)
  const b = await connect(t, server.ws)
  await join(a, 'full')
  await join(b, 'full')
  b.drop()
  t.ok(await until(async () => /privydrop_ws_connections 1\b/.test(await (await fetch(`${server.http}/metrics`)).text())), 'b is held')
  const count = 100
  for (let i = 0; i < count; i++) a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0' } }, `o${i}`)
  t.ok(await until(() => a.all('error').length === count - 2, 5000), `${count - 2} refused`)
  await a.request('ping', {}, 'pong') // everything before it has been handled (and logged)
  // Logged, yes, but maybe not read from the pipe yet: counted in what the server logged before a request sent now.
  const warned = linesWith(await outputBefore(server), 'resume buffer full')
  t.ok(warned.length >= 1 && warned.length <= 2, `${count - 2} refusals, ${warned.length} warning line(s)`)
})
