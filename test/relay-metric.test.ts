import t from 'tap'
import { startRedis } from './helpers/redis'
import { startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'

/*
 * privydrop_relay_latency_seconds says what it measures: one observation per
 * relay on the sender's instance, labelled by path (the target here, or on
 * another instance, where only the hand-off to the router is timed).
 */

async function latencyCounts (server: ServerProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`${server.http}/metrics`)).text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^privydrop_relay_latency_seconds_count\{path="(\w+)"\} (\d+)$/gm)) out[m[1] as string] = Number(m[2])
  return out
}

t.test('relay latency is observed per relay on the sender\'s instance, by path', async (t) => {
  const redis = await startRedis(t, { own: true })
  const env = { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: 'warn' }
  const [s1, s2] = await Promise.all([startServer(t, { ...env, INSTANCE_ID: 'node1' }), startServer(t, { ...env, INSTANCE_ID: 'node2' })])
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  const res = await fetch(`${s1.http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId: 'lat' }) })
  t.equal(res.status, 200)
  const a = await connect(t, s1.ws)
  const b = await connect(t, s1.ws)
  const c = await connect(t, s2.ws)
  for (const x of [a, b, c]) await join(x, 'lat')
  // b's and c's arrival reached a's instance.
  await a.next('ready')
  await a.next('ready')

  for (let i = 0; i < 3; i++) a.send('ice-candidate', { peerId: b.peerId, candidate: null })
  for (let i = 0; i < 2; i++) a.send('ice-candidate', { peerId: c.peerId, candidate: null })
  for (let i = 0; i < 3; i++) await b.next('ice-candidate')
  for (let i = 0; i < 2; i++) await c.next('ice-candidate')
  t.same(await latencyCounts(s1), { local: 3, remote: 2 }, 'three to a peer here, two to a peer on the other instance')
  t.same(await latencyCounts(s2), {}, 'nothing on the receiving instance')
})
