import t from 'tap'
import Fastify from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import { createRateLimitStore } from '../src/redis/rate-limit-store'
import { startServer, waitForOutput, type ServerProcess } from './helpers/process'
import { startRedis } from './helpers/redis'
import { connect, refusedWith, TestClient } from './helpers/ws'
import { until } from './helper'

/** Statuses of `count` GET /api/ice_servers (a route that needs no store), one at a time. */
async function statuses (server: ServerProcess, count: number, forwardedFor?: (i: number) => string): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < count; i++) {
    const headers: Record<string, string> = forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor(i) }
    out.push((await fetch(`${server.http}/api/ice_servers`, { headers })).status)
  }
  return out
}

const tally = (codes: number[]) => ({ ok: codes.filter(c => c === 200).length, limited: codes.filter(c => c === 429).length })

const GARBAGE = ['not-an-ip, {}', '{}', 'unknown', '<script>', '1.2.3.999', '::g::', 'example.com', '1.2.3.4.5', '[1.2.3.4]', 'null']

t.test('TRUST_PROXY=true: X-Forwarded-For values that are not addresses do not get a rate-limit budget of their own', async (t) => {
  const server = await startServer(t, { TRUST_PROXY: 'true', API_RATE_LIMIT_MAX: '5', LOG_LEVEL: 'warn' })

  const garbage = tally(await statuses(server, GARBAGE.length, i => `${GARBAGE[i]}`))
  t.comment(`garbage X-Forwarded-For: ${garbage.ok} passed, ${garbage.limited} got 429 (limit 5)`)
  t.same(garbage, { ok: 5, limited: GARBAGE.length - 5 }, 'all garbage values share one bucket (the socket address)')
  t.equal((await statuses(server, 1))[0], 429, 'and it is the bucket of the proxy itself')

  const distinct = tally(await statuses(server, 8, i => `203.0.113.${i + 1}`))
  t.same(distinct, { ok: 8, limited: 0 }, 'each real client address behind the proxy keeps its own budget')
  t.same(tally(await statuses(server, 1, () => 'junk, 198.51.100.9')), { ok: 1, limited: 0 }, 'a junk entry is skipped, the valid one next to it counts')

  // Forms some proxies write: address:port and [IPv6]:port, folded into the bare address.
  const ported = await statuses(server, 6, i => ['198.51.100.7', '198.51.100.7:1234', '198.51.100.7:80'][i % 3] ?? '')
  t.same(ported.slice(-1), [429], 'v4:port counts as the same client as v4')
  const v6 = await statuses(server, 6, i => ['2001:db8::1', '[2001:db8::1]:443', '[2001:DB8:0::1]'][i % 3] ?? '')
  t.same(v6.slice(-1), [429], '[v6]:port and other spellings count as the same client')
})

t.test('TRUST_PROXY=true: garbage X-Forwarded-For does not get around MAX_CONNECTIONS_PER_IP', async (t) => {
  const server = await startServer(t, { TRUST_PROXY: 'true', MAX_CONNECTIONS_PER_IP: '2', LOG_LEVEL: 'warn' })
  const opened: number[] = []
  for (let i = 0; i < 4; i++) {
    const client = new TestClient(server.ws, { headers: { 'x-forwarded-for': `junk-${i}` } })
    t.teardown(() => client.ws.terminate())
    try {
      await client.opened
      opened.push(101)
    } catch (err) {
      opened.push((err as { statusCode?: number }).statusCode ?? 0)
    }
  }
  t.comment(`upgrades with junk-0..3: ${opened.join(', ')} (cap 2)`)
  t.same(opened, [101, 101, 429, 429], 'two opened, the rest refused with 429')
  t.ok((await connect(t, server.ws, { headers: { 'x-forwarded-for': '203.0.113.10' } })).peerId, 'a real address behind the proxy has its own cap')
  t.equal(await refusedWith(new TestClient(server.ws, { headers: { 'x-forwarded-for': 'junk, 127.0.0.1:9' } })), 429, 'an address:port counts against the address it names')
})

t.test('navigator.sendBeacon: POST /api/leave_room with a text/plain JSON body leaves the room', async (t) => {
  const server = await startServer(t, { LOG_LEVEL: 'warn', BODY_LIMIT_BYTES: '1024' })
  const { roomId } = await (await fetch(`${server.http}/api/get_room`)).json() as { roomId: string }
  const a = await connect(t, server.ws)
  const b = await connect(t, server.ws)
  t.equal((await a.request('join', { roomId }, 'joinResponse')).data.success, true)
  t.equal((await b.request('join', { roomId }, 'joinResponse')).data.success, true)

  // What sendBeacon(url, string) sends.
  const beacon = (url: string, body: string) => fetch(`${server.http}${url}`, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8' }, body })

  const malformed = await beacon('/api/leave_room', '{"roomId":')
  t.equal(malformed.status, 400, 'malformed JSON is a 400')
  t.match(await malformed.json(), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY', error: 'Bad Request' })
  const invalid = await beacon('/api/leave_room', JSON.stringify({ roomId, peerId: a.peerId }))
  t.equal(invalid.status, 400, 'the body schema still applies')
  t.match(await invalid.json(), { statusCode: 400, code: 'FST_ERR_VALIDATION', message: /token/ })
  t.equal((await beacon('/api/leave_room', JSON.stringify({ roomId, peerId: a.peerId, token: 'x'.repeat(2000) }))).status, 413, 'and so does BODY_LIMIT_BYTES')
  t.equal((await beacon('/api/check_room', JSON.stringify({ roomId }))).status, 400, 'other routes still take JSON only')

  const res = await beacon('/api/leave_room', JSON.stringify({ roomId, peerId: a.peerId, token: a.token }))
  t.comment(`sendBeacon-style leave_room: HTTP ${res.status}`)
  t.equal(res.status, 200)
  t.same(await res.json(), { success: true, message: 'Successfully left the room' })
  t.same((await b.next('peer-disconnected')).data, { peerId: a.peerId }, 'the other member is told')
})

t.test('Redis down: the REST rate limit keeps counting in memory instead of switching off', async (t) => {
  const redis = await startRedis(t, { own: true })
  const server = await startServer(t, {
    REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, REDIS_CONNECT_TIMEOUT_MS: '500', API_RATE_LIMIT_MAX: '20', LOG_LEVEL: 'warn'
  })
  t.same(tally(await statuses(server, 3)), { ok: 3, limited: 0 })
  t.ok((await redis.client.keys(`${redis.prefix}ratelimit:api:*`)).length > 0, 'counted in Redis while it is up')

  await redis.stop()
  t.ok(await until(async () => (await fetch(`${server.http}/ready`)).status === 503, 10_000), 'the server noticed the outage')
  const during = tally(await statuses(server, 30))
  t.comment(`Redis down, limit 20, 3 spent before: ${during.ok} of 30 passed, ${during.limited} got 429`)
  t.ok(during.ok <= 20, 'no more than the limit passes')
  t.ok(during.limited >= 10, 'the rest get 429')
  t.same(during, { ok: 17, limited: 13 }, 'the in-memory count went on from the requests this instance had seen')
  t.ok(await waitForOutput(server, /rate limit/i), 'the switch is logged')

  await redis.start()
  t.ok(await until(async () => (await fetch(`${server.http}/ready`)).status === 200, 10_000), 'ready again')
  t.equal((await statuses(server, 1))[0], 200, 'back on the shared Redis count (emptied by the restart)')
  t.ok((await redis.client.keys(`${redis.prefix}ratelimit:api:*`)).length > 0, 'counted in Redis again')
})

t.test('the rate-limit store asks Redis only while the injected predicate allows it', async (t) => {
  const redis = await startRedis(t)
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  t.teardown(() => client.quit())
  let usable = false
  const app = Fastify()
  await app.register(rateLimit, {
    max: 3,
    timeWindow: 60_000,
    store: createRateLimitStore({ redis: client, nameSpace: `${redis.prefix}rl:`, usable: () => usable, log: app.log })
  })
  app.get('/', async () => 'ok')
  t.teardown(() => app.close())
  const hit = async () => (await app.inject({ url: '/', remoteAddress: '192.0.2.1' })).statusCode
  const keys = () => redis.client.keys(`${redis.prefix}rl:*`)

  t.same([await hit(), await hit()], [200, 200])
  t.same(await keys(), [], 'predicate false: Redis is not asked')
  usable = true
  t.same([await hit(), await hit()], [200, 200], 'predicate true: counted in Redis, which starts from zero')
  t.same(await keys(), [`${redis.prefix}rl:192.0.2.1`])
  usable = false
  t.same([await hit(), await hit()], [429, 429], 'back in memory, the count includes the requests Redis answered')
})
