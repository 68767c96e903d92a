import t from 'tap'
import { startRedis } from './helpers/redis'
import { startTcpProxy } from './helpers/tcp-proxy'
import { createRoom, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { until } from './helper'

/*
 * `unavailable` means "not applied" (docs/protocol.md §3.4). A relay whose
 * publish reached Redis and ran there, but whose reply never came back (the
 * connection died first), may well have been delivered: its sender must hear
 * `outcome_unknown` for it, never `unavailable`. A TCP proxy in this test
 * lets the sender's instance's commands through to a real redis-server and
 * holds back the replies; the target is on another instance.
 *
 * Count: 40 offers. Each one the target receives must not be answered
 * `unavailable`; each one answered `unavailable` must never arrive. Before
 * round 3, every offer that ran was answered `unavailable` and delivered.
 */

t.setTimeout(60_000)

t.test('a relay that ran in Redis but lost its reply is answered outcome_unknown, never unavailable', async (t) => {
  const redis = await startRedis(t, { own: true })
  const url = new URL(redis.url)
  const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) })
  t.teardown(() => proxy.close())
  const proxied = new URL(redis.url)
  proxied.port = String(proxy.port)
  const env = { KEY_PREFIX: redis.prefix, DISABLE_JOIN_RATE_LIMIT: 'true', REDIS_CONNECT_TIMEOUT_MS: '1000', LOG_LEVEL: 'warn' }
  const s1: ServerProcess = await startServer(t, { ...env, REDIS_URL: proxied.toString(), INSTANCE_ID: 's1' })
  const s2: ServerProcess = await startServer(t, { ...env, REDIS_URL: redis.url, INSTANCE_ID: 's2' })
  await createRoom(s1, 'fate')
  const x = await connect(t, s1.ws)
  const y = await connect(t, s2.ws)
  await join(x, 'fate')
  await join(y, 'fate')
  await x.next('ready')

  proxy.oneWay()
  const N = 40
  for (let i = 0; i < N; i++) x.send('offer', { peerId: y.peerId, offer: { type: 'offer', sdp: `v=0 #${i}` } }, `o${i}`)
  t.ok(await until(() => x.all('error').filter(f => f.id?.startsWith('o') === true).length === N, 15_000), 'every offer answered')
  t.ok(await until(() => y.all('offer').length === N, 5000), 'and every one ran in Redis: the target got all of them')
  proxy.heal()

  const order = y.all('offer').map(f => Number(/#(\d+)/.exec(String(f.data.offer.sdp))?.[1]))
  const delivered = new Set(order)
  const answers = new Map(x.all('error').map(f => [Number(String(f.id).slice(1)), String(f.data.code)]))
  const refusedButDelivered = [...answers].filter(([i, code]) => code === 'unavailable' && delivered.has(i))
  t.same(refusedButDelivered, [], 'no delivered offer was answered unavailable')
  t.same([...new Set(answers.values())], ['outcome_unknown'], 'each was answered outcome_unknown')
  t.same(order, Array.from({ length: N }, (_, i) => i), 'delivered once each, in order')
})
