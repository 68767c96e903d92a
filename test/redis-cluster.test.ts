import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster'
import { OFFER, createRoom, handshakeAcross, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { until } from './helper'
import { loadConfig } from '../src/config'
import { clusterConfigured } from '../src/redis/client'

/*
 * Redis Cluster, all real processes on loopback: three primaries with a
 * replica each (formed by `redis-cli --cluster create`) and several server
 * instances with REDIS_CLUSTER_NODES. What works on one Redis works here:
 * cross-instance relay in order, broadcasts, resume on another instance,
 * ghost cleanup after SIGKILL, and a primary failover inside the cluster.
 */

async function instances (t: Test, cluster: TestCluster, count: number, env: Record<string, string> = {}): Promise<ServerProcess[]> {
  return await Promise.all(Array.from({ length: count }, (_, i) => startServer(t, {
    REDIS_CLUSTER_NODES: cluster.nodes,
    INSTANCE_ID: `node${i + 1}`,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    LOG_LEVEL: 'warn',
    ...env
  })))
}

/** Calls of one command on every primary (INFO commandstats). */
async function calls (cluster: TestCluster, command: string): Promise<number> {
  let total = 0
  for (const node of cluster.client.nodes('master')) {
    const info = await node.info('commandstats')
    total += Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0)
  }
  return total
}

t.test('config: REDIS_CLUSTER_NODES is one way to reach Redis, as host:port seeds', async (t) => {
  t.throws(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_CLUSTER_NODES: '127.0.0.1:7000' }), /REDIS_URL and REDIS_CLUSTER_NODES/)
  t.throws(() => loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_CLUSTER_NODES: '127.0.0.1:7000' }), /REDIS_SENTINELS and REDIS_CLUSTER_NODES/)
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000,nope' }), /REDIS_CLUSTER_NODES: "nope" is not host:port/)
  const config = loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000, 127.0.0.1:7001' })
  t.ok(clusterConfigured(config))
  t.notOk(clusterConfigured(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' })))
})

t.test('a full session across instances on a 3-primary cluster: rooms spread over every primary, relays go through sharded pub/sub', async (t) => {
  const cluster = await startRedisCluster(t)
  const [s1, s2] = await instances(t, cluster, 2, { WS_RATE_PER_S: '10000', WS_RATE_BURST: '10000' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')

  // A room's keys share a slot; different rooms land on different primaries.
  const owners = new Set<number>()
  for (let i = 0; i < 24; i++) {
    await createRoom(s1, `spread-${i}`)
    const key = `room:{spread-${i}}`
    t.equal(await cluster.client.exists(key), 1, `${key} exists`)
    owners.add(await cluster.primaryOf(key))
  }
  t.same([...owners].sort(), await cluster.primaries(), 'rooms are spread over all three primaries')

  const publishes = await calls(cluster, 'publish')
  const { a, b } = await handshakeAcross(t, s1, s2, 'x-room')
  a.send('initiator-online', { roomId: 'x-room' })
  t.same((await b.next('initiator-online')).data, { roomId: 'x-room' })

  for (let i = 0; i < 500; i++) a.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: `c${i}`, sdpMLineIndex: 0 } })
  t.ok(await until(() => b.all('ice-candidate').length >= 500, 10_000), 'all 500 arrive')
  t.same(b.all('ice-candidate').map(f => String(f.data.candidate.candidate)), Array.from({ length: 500 }, (_, i) => `c${i}`), '500 candidates across instances arrive in order')
  t.ok(await calls(cluster, 'spublish') >= 500, 'relays are SPUBLISHed')
  t.equal(await calls(cluster, 'publish'), publishes, 'and never PUBLISHed (which every node of a cluster would carry)')

  const left = await b.request('leave', { roomId: 'x-room' }, 'leaveResponse')
  t.same(left.data, { success: true, roomId: 'x-room' })
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId }, 'leave crosses instances')
  t.same(await cluster.client.smembers('room:{x-room}:sockets'), [a.peerId], 'the room\'s member set is kept in its own slot')
  t.equal(a.all('error').length, 0)

  // Every key on every primary has a TTL, as on one Redis.
  const noTtl: string[] = []
  for (const node of cluster.client.nodes('master')) {
    for (const key of await node.keys('*')) if (await node.ttl(key) === -1) noTtl.push(key)
  }
  t.same(noTtl, [], 'no key without a TTL')
})

t.test('resume on another instance, and SIGKILL: the dead instance\'s peers leave their rooms', async (t) => {
  const cluster = await startRedisCluster(t)
  const [s1, s2, s3] = await instances(t, cluster, 3, { INSTANCE_DEAD_AFTER_MS: '1500', RESUME_GRACE_MS: '1000' })
  if (s1 === undefined || s2 === undefined || s3 === undefined) throw new Error('three servers expected')
  await createRoom(s1, 'r')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  const c = await connect(t, s3.ws)
  await join(a, 'r')
  await join(b, 'r')
  await join(c, 'r')

  // b moves to s3 with its token: same identity, same room.
  const token = b.token
  b.ws.terminate()
  const moved = await connect(t, `${s3.ws}?resume=${encodeURIComponent(token)}`)
  t.equal(moved.peerId, b.peerId, 'resumed with the same peer id on another instance')
  a.send('offer', { peerId: b.peerId, offer: OFFER })
  t.equal((await moved.next('offer')).data.from, a.peerId, 'relays follow the peer to its new instance')

  s1.child.kill('SIGKILL')
  t.same((await c.next('peer-disconnected', 15_000)).data, { peerId: a.peerId }, 'survivors hear that the dead instance\'s peer left')
  t.ok(await until(async () => !(await cluster.client.smembers('room:{r}:sockets')).includes(a.peerId), 5000), 'the dead peer left the room\'s member set')
  t.notOk(await cluster.client.exists(`session:{${a.peerId}}`), 'its session is gone')
})

t.test('limits and counts on a cluster: the join limiter, REST rate limits, referrer counts', async (t) => {
  const cluster = await startRedisCluster(t)
  const [s1, s2] = await instances(t, cluster, 2, { DISABLE_JOIN_RATE_LIMIT: 'false', JOIN_RATE_LIMIT_MAX: '2', API_RATE_LIMIT_MAX: '5' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  await createRoom(s1, 'limited')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  // The join limiter is per IP and shared: two joins pass across the instances, the third does not.
  await join(a, 'limited')
  await a.request('leave', { roomId: 'limited' }, 'leaveResponse')
  await join(b, 'limited')
  const third = await a.request('join', { roomId: 'limited' }, 'joinResponse')
  t.equal(third.data.code, 'rate_limited', 'the join limiter counts across instances')

  for (const s of [s1, s2]) {
    const res = await fetch(`${s.http}/api/set_track`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"ref":"news","timestamp":1}' })
    t.equal(res.status, 200, 'set_track counted')
  }
  const day = new Date().toISOString().slice(0, 10)
  t.same(await cluster.client.hgetall(`referrers:daily:${day}`), { news: '2' }, 'referrer counts from both instances add up')
  const exported = spawnSync(process.execPath, ['dist/cli/export-tracking.js', '--days=1', '--format=json'], { env: { PATH: process.env['PATH'], REDIS_CLUSTER_NODES: cluster.nodes }, encoding: 'utf8' })
  t.equal(exported.status, 0, `the export CLI runs on the cluster ${exported.stderr}`)
  t.same(JSON.parse(exported.stdout || '{}'), { [day]: { news: 2 } }, 'and exports those counts')

  // 5 requests per window per IP, counted in the cluster: create_room and the two set_track calls were the first 3.
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push((await fetch(`${(i % 2 === 0 ? s1 : s2).http}/api/check_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"roomId":"limited"}' })).status)
  t.same(statuses, [200, 200, 429, 429], 'the REST rate limit is shared by the instances')
})

t.test('a primary fails over inside the cluster: instances recover by themselves, sockets stay open, relays work', async (t) => {
  const cluster = await startRedisCluster(t)
  const [s1, s2] = await instances(t, cluster, 2, { REDIS_CONNECT_TIMEOUT_MS: '1000', REDIS_HEALTH_INTERVAL_MS: '250' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  await createRoom(s1, 'fo')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  await join(a, 'fo')
  await join(b, 'fo')
  await a.next('ready')

  // Kill the primary that carries node2's channel: relays to b must find the promoted replica.
  const victim = await cluster.primaryOf('instance:{node2}')
  const killedAt = Date.now()
  cluster.kill(victim)

  const readyAt: number[] = []
  await Promise.all([s1, s2].map(async (s, i) => {
    // /ready may stay 200 if the instance has not noticed yet: wait for the cluster to have a new primary first.
    t.ok(await until(async () => (await cluster.primaries().catch(() => [victim])).every(p => p !== victim), 20_000), 'a replica was promoted')
    t.ok(await until(async () => (await fetch(`${s.http}/ready`)).ok, 20_000), `instance ${i + 1} ready again`)
    readyAt[i] = Date.now() - killedAt
  }))
  let relayAt = 0
  const relayed = await until(async () => {
    a.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: `after-${Date.now()}`, sdpMLineIndex: 0 } })
    const got = b.all('ice-candidate').some(f => String(f.data.candidate.candidate).startsWith('after-'))
    if (got && relayAt === 0) relayAt = Date.now() - killedAt
    return got
  }, 20_000, 200)
  t.ok(relayed, 'a cross-instance relay gets through after the failover')
  t.comment(`cluster failover: /ready 200 after ${readyAt.join(' ms, ')} ms; first cross-instance relay after ${relayAt} ms`)
  t.equal(a.ws.readyState, a.ws.OPEN, 'the sockets stayed open')
  t.equal(b.ws.readyState, b.ws.OPEN)
  // Joins work after the failover too.
  await createRoom(s2, 'fo-after')
  const c = await connect(t, s2.ws)
  await join(c, 'fo-after')
  t.pass('a join after the failover')
})
