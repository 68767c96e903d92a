import t from 'tap'
import { buildTestApp, STORE_MODES, storeEnv, storeTime } from './helper'
import { utcDay } from '../src/store/types'

const json = { 'content-type': 'application/json' }

for (const mode of STORE_MODES) {
  t.test(`REST API on the ${mode} store`, async (t) => {
    t.test('create_room: new id succeeds, a taken short id fails, a long id is idempotent', async (t) => {
      const { env } = await storeEnv(t, mode)
      const app = await buildTestApp(t, env)
      const create = (roomId: string) => app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId } })

      const first = await create('abc1')
      t.equal(first.statusCode, 200)
      t.same(first.json(), { success: true, message: 'create room success' })
      t.same((await create('abc1')).json(), { success: false, message: 'roomId is already exists' })

      t.same((await create('team-room_2026')).json(), { success: true, message: 'create room success' })
      const again = (await create('team-room_2026')).json()
      t.equal(again.success, true, 'ids of 8+ characters are idempotent')
    })

    t.test('create_room of an existing long id does not refresh its TTL', async (t) => {
      const { env } = await storeEnv(t, mode)
      const time = storeTime(mode)
      const app = await buildTestApp(t, { ...env, ROOM_TTL_S: '2' }, { memoryStoreNow: time.now })
      const create = () => app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'longroom1' } })
      const check = async () => (await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'longroom1' } })).json().available
      await create()
      await time.elapse(1200)
      t.equal((await create()).json().success, true)
      t.equal(await check(), false)
      await time.elapse(1000)
      t.equal(await check(), true, 'expired on the original schedule')
    })

    t.test('get_room generates a 4-digit id, creates it, and never repeats a live one', async (t) => {
      const { env } = await storeEnv(t, mode)
      const app = await buildTestApp(t, env)
      const seen = new Set<string>()
      for (let i = 0; i < 40; i++) {
        const res = await app.inject('/api/get_room')
        t.equal(res.statusCode, 200)
        const { roomId } = res.json()
        t.match(roomId, /^\d{4}$/)
        t.notOk(seen.has(roomId), 'unique')
        seen.add(roomId)
        const check = await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId } })
        t.same(check.json(), { available: false }, 'generated room exists')
      }
    })

    t.test('check_room reports availability', async (t) => {
      const { env } = await storeEnv(t, mode)
      const app = await buildTestApp(t, env)
      const check = async () => (await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'free-1' } })).json()
      t.same(await check(), { available: true })
      await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'free-1' } })
      t.same(await check(), { available: false })
    })

    t.test('invalid bodies are 400 in Fastify\'s shape and change nothing', async (t) => {
      const { env } = await storeEnv(t, mode)
      const app = await buildTestApp(t, env)
      const bad: Array<[string, string | object]> = [
        ['missing roomId', {}],
        ['number roomId (no coercion)', { roomId: 42 }],
        ['null roomId', { roomId: null }],
        ['empty roomId', { roomId: '' }],
        ['oversize roomId', { roomId: 'a'.repeat(65) }],
        ['colon in roomId', { roomId: 'room:1' }],
        ['space in roomId', { roomId: 'room 1' }],
        ['unicode in roomId', { roomId: 'räum' }],
        ['array body', [{ roomId: 'x' }]],
        ['broken JSON', '{"roomId": "abc'],
        ['JSON string body', '"abc"']
      ]
      for (const route of ['/api/create_room', '/api/check_room']) {
        for (const [label, body] of bad) {
          const res = await app.inject({
            method: 'POST',
            url: route,
            headers: json,
            payload: typeof body === 'string' ? body : JSON.stringify(body)
          })
          t.equal(res.statusCode, 400, `${route}: ${label} → 400`)
          const parsed = res.json()
          t.equal(parsed.statusCode, 400)
          t.equal(parsed.error, 'Bad Request')
          t.type(parsed.message, 'string')
          t.notMatch(res.body, /at .+:\d+:\d+/, 'no stack trace')
        }
      }
      for (const id of ['42', 'room:1', 'x', 'abc', 'a'.repeat(65)]) {
        t.equal(await app.store.roomExists(id), false, `nothing was created for ${id.slice(0, 10)}`)
      }
    })

    t.test('set_track counts on the server\'s UTC day, whatever the client says', async (t) => {
      const { env } = await storeEnv(t, mode)
      const app = await buildTestApp(t, env)
      for (const timestamp of [0, '1999-01-01T00:00:00Z', Date.now()]) {
        const res = await app.inject({ method: 'POST', url: '/api/set_track', payload: { ref: 'producthunt', timestamp, path: '/' } })
        t.equal(res.statusCode, 200)
        t.same(res.json(), { success: true })
      }
      t.same(await app.store.referrerCounts(utcDay()), { producthunt: 3 })
      t.same(await app.store.referrerCounts('1999-01-01'), {})
      for (const payload of [{ timestamp: 1 }, { ref: '', timestamp: 1 }, { ref: 'x'.repeat(65), timestamp: 1 }, { ref: 'x', timestamp: true }, { ref: 7, timestamp: 1 }]) {
        const res = await app.inject({ method: 'POST', url: '/api/set_track', payload })
        t.equal(res.statusCode, 400, `rejects ${JSON.stringify(payload).slice(0, 40)}`)
      }
      t.same(await app.store.referrerCounts(utcDay()), { producthunt: 3 }, 'rejected requests counted nothing')
    })
  })
}

t.test('logs_debug answers when enabled and is 404 when disabled', async (t) => {
  const on = await buildTestApp(t, { LOGS_DEBUG_ENABLED: 'true' })
  const res = await on.inject({ method: 'POST', url: '/api/logs_debug', payload: { message: 'x'.repeat(5000), timestamp: Date.now() } })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { success: true })
  t.equal((await on.inject({ method: 'POST', url: '/api/logs_debug', payload: { timestamp: 1 } })).statusCode, 400)

  const off = await buildTestApp(t, { LOGS_DEBUG_ENABLED: 'false' })
  const gone = await off.inject({ method: 'POST', url: '/api/logs_debug', payload: { message: 'x', timestamp: 1 } })
  t.equal(gone.statusCode, 404)
  t.equal(gone.json().error, 'Not Found')

  const prod = await buildTestApp(t, { NODE_ENV: 'production' })
  t.equal((await prod.inject({ method: 'POST', url: '/api/logs_debug', payload: { message: 'x', timestamp: 1 } })).statusCode, 404)
})

t.test('health, readiness and metrics', async (t) => {
  const app = await buildTestApp(t, { NODE_ENV: 'staging' })
  for (const url of ['/health', '/api/health']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.match(body, { status: 'healthy', service: 'privydrop-backend', environment: 'staging', version: /^\d+\.\d+\.\d+/ })
    t.type(body.uptime, 'number')
    t.ok(!Number.isNaN(Date.parse(body.timestamp)))
  }
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready', checks: { store: 'ok', shutdown: 'ok' } })

  await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'm' } })
  const metrics = await app.inject('/metrics')
  t.equal(metrics.statusCode, 200)
  t.match(metrics.headers['content-type'], /text\/plain/)
  t.match(metrics.body, /privydrop_http_requests_total\{method="POST",route="\/api\/check_room",status_code="200"\} 1/)
  t.match(metrics.body, /process_cpu_user_seconds_total/)
})

t.test('unknown routes, oversize bodies and wrong content types are clean JSON errors', async (t) => {
  const app = await buildTestApp(t, { BODY_LIMIT_BYTES: '1024' })
  const notFound = await app.inject('/api/nope')
  t.equal(notFound.statusCode, 404)
  t.match(notFound.json(), { statusCode: 404, error: 'Not Found' })

  const big = await app.inject({ method: 'POST', url: '/api/create_room', headers: json, payload: JSON.stringify({ roomId: 'a', pad: 'x'.repeat(2000) }) })
  t.equal(big.statusCode, 413)
  t.match(big.json(), { statusCode: 413, error: 'Payload Too Large' })

  const text = await app.inject({ method: 'POST', url: '/api/create_room', headers: { 'content-type': 'text/plain' }, payload: 'roomId=a' })
  t.equal(text.statusCode, 400, 'a text body is not an object')
  const xml = await app.inject({ method: 'POST', url: '/api/create_room', headers: { 'content-type': 'application/xml' }, payload: '<roomId>a</roomId>' })
  t.equal(xml.statusCode, 415)
  t.match(xml.json(), { statusCode: 415, error: 'Unsupported Media Type' })
  t.same((await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'a' } })).json(), { available: true })
})

t.test('REST rate limit answers 429 with retry-after, per client IP', async (t) => {
  const app = await buildTestApp(t, { API_RATE_LIMIT_MAX: '3', API_RATE_LIMIT_WINDOW_S: '60' })
  const hit = (ip: string) => app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'r' }, remoteAddress: ip })
  for (let i = 0; i < 3; i++) t.equal((await hit('10.0.0.1')).statusCode, 200)
  const limited = await hit('10.0.0.1')
  t.equal(limited.statusCode, 429)
  t.ok(Number(limited.headers['retry-after']) > 0, 'retry-after header')
  t.match(limited.json(), { statusCode: 429, error: 'Too Many Requests' })
  t.equal((await hit('10.0.0.2')).statusCode, 200, 'another IP is not limited')
  t.equal((await app.inject({ url: '/health', remoteAddress: '10.0.0.1' })).statusCode, 200, 'health is never limited')
})

t.test('X-Forwarded-For is believed only with TRUST_PROXY', async (t) => {
  const hit = (app: Awaited<ReturnType<typeof buildTestApp>>, forwarded: string) => app.inject({
    method: 'POST', url: '/api/check_room', payload: { roomId: 'r' }, remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': forwarded }
  })
  const untrusted = await buildTestApp(t, { API_RATE_LIMIT_MAX: '2' })
  t.equal((await hit(untrusted, '1.1.1.1')).statusCode, 200)
  t.equal((await hit(untrusted, '2.2.2.2')).statusCode, 200)
  t.equal((await hit(untrusted, '3.3.3.3')).statusCode, 429, 'spoofed header ignored: all one client')

  const trusted = await buildTestApp(t, { API_RATE_LIMIT_MAX: '2', TRUST_PROXY: '127.0.0.1' })
  t.equal((await hit(trusted, '1.1.1.1')).statusCode, 200)
  t.equal((await hit(trusted, '1.1.1.1')).statusCode, 200)
  t.equal((await hit(trusted, '2.2.2.2')).statusCode, 200, 'a different client behind the proxy has its own budget')
  t.equal((await hit(trusted, '1.1.1.1')).statusCode, 429)
})

t.test('CORS follows CORS_ORIGIN', async (t) => {
  const app = await buildTestApp(t, { CORS_ORIGIN: 'https://privydrop.app' })
  const ok = await app.inject({ method: 'OPTIONS', url: '/api/check_room', headers: { origin: 'https://privydrop.app', 'access-control-request-method': 'POST' } })
  t.equal(ok.headers['access-control-allow-origin'], 'https://privydrop.app')
  const other = await app.inject({ method: 'OPTIONS', url: '/api/check_room', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } })
  t.not(other.headers['access-control-allow-origin'], 'https://evil.example')
})

t.test('while draining, new requests get 503 and connection: close; probes still answer', async (t) => {
  const app = await buildTestApp(t)
  app.lifecycle.shuttingDown = true
  const refused = await app.inject('/api/get_room')
  t.equal(refused.statusCode, 503)
  t.equal(refused.headers['connection'], 'close')
  t.match(refused.json(), { statusCode: 503, error: 'Service Unavailable', message: 'Server is shutting down' })
  t.equal((await app.inject('/health')).statusCode, 200, 'liveness still answers')
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 503, 'readiness reports the drain')
  t.equal(ready.json().checks.shutdown, 'fail')
})
