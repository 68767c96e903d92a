import t from 'tap'
import { buildTestApp, until } from './helper'
import { startRedis } from './helpers/redis'
import { connect, joinRoom, listen } from './helpers/ws'

t.test('Redis stopped mid-run: 503 fast, /ready 503, /health 200, then recovery without restart', async (t) => {
  const redis = await startRedis(t, { own: true })
  const app = await buildTestApp(t, { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, REDIS_CONNECT_TIMEOUT_MS: '500' })
  const create = (roomId: string) => app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId } })

  t.equal((await create('before')).statusCode, 200)
  await redis.stop()

  // Bounded, not timed: a hang would hit this limit; a healthy failure is far below it.
  const started = Date.now()
  const down = await create('during')
  t.equal(down.statusCode, 503, 'store-backed request fails with 503')
  t.ok(Date.now() - started < 5000, 'and does not hang')
  t.match(down.json(), { statusCode: 503, error: 'Service Unavailable', message: /unavailable/i })
  t.notMatch(down.body, /ECONNREFUSED|at .+:\d+/, 'no internals leak')

  for (const [url, payload] of [['/api/check_room', { roomId: 'x' }], ['/api/set_track', { ref: 'a', timestamp: 1 }]] as const) {
    t.equal((await app.inject({ method: 'POST', url, payload })).statusCode, 503, `${url} → 503`)
  }
  t.equal((await app.inject('/api/get_room')).statusCode, 503, '/api/get_room → 503')

  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { status: 'unavailable', checks: { store: 'fail', shutdown: 'ok' } })
  t.equal((await app.inject('/health')).statusCode, 200, 'liveness unaffected')
  t.equal((await app.inject('/api/ice_servers')).statusCode, 200, 'routes that need no store keep working')

  await redis.start()
  t.ok(await until(async () => (await app.inject('/ready')).statusCode === 200, 10_000), 'ready again once Redis is back')
  t.same((await create('after')).json(), { success: true, message: 'create room success' })
  t.equal((await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'after' } })).json().available, false)
})

t.test('Redis unreachable at startup: the server starts, reports not ready, and heals', async (t) => {
  const redis = await startRedis(t, { own: true })
  await redis.stop()
  const app = await buildTestApp(t, { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, REDIS_CONNECT_TIMEOUT_MS: '500' })
  t.equal((await app.inject('/ready')).statusCode, 503)
  t.equal((await app.inject('/health')).statusCode, 200)
  await redis.start()
  t.ok(await until(async () => (await app.inject('/ready')).statusCode === 200, 10_000), 'ready once Redis comes up')
})

t.test('Redis down: sockets stay open, joins answer unavailable, relays between joined peers go on', async (t) => {
  const redis = await startRedis(t, { own: true })
  const app = await buildTestApp(t, { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, REDIS_CONNECT_TIMEOUT_MS: '500' })
  const { ws } = await listen(t, app)
  const a = await connect(t, ws)
  const b = await connect(t, ws)
  await joinRoom(app, 'outage', a, b)

  await redis.stop()
  const c = await connect(t, ws)
  const refused = await c.request('join', { roomId: 'outage' }, 'joinResponse')
  t.same(refused.data, { success: false, code: 'unavailable', message: 'Service temporarily unavailable, try again', roomId: 'outage' })
  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0' } })
  t.equal((await b.next('offer')).data.from, a.peerId, 'relay needs no store')
  t.equal(a.ws.readyState, a.ws.OPEN)

  await redis.start()
  t.ok(await until(async () => (await app.inject('/ready')).statusCode === 200, 10_000))
  await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'outage' } })
  t.equal((await c.request('join', { roomId: 'outage' }, 'joinResponse')).data.success, true, 'joins work again')
})
