import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster'
import { OFFER, createRoom, handshakeAcross, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { TICK_MS, countStreams, failoverVerdict, pairsAcross, refusalTimes, type Instance } from './helpers/failover'
import { sleep, until } from './helper'
import { loadConfig } from '../src/config'
import { clusterConfigured } from '../src/redis/client'

/*
 * Redis Cluster, all real processes on loopback: three primaries with a
 * replica each (formed by `redis-cli --cluster create`) and several server
 * instances with REDIS_CLUSTER_NODES. What works on one Redis works here:
 * cross-instance relay in order, broadcasts, resume on another instance,
 * ghost cleanup after SIGKILL, and a primary failover inside the cluster,
 * during which every message of pairs streaming across the instances is
 * counted (test/helpers/failover.ts).
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
  const spublishes = await calls(cluster, 'spublish')
  a.send('initiator-online', { roomId: 'x-room' })
  t.same((await b.next('initiator-online')).data, { roomId: 'x-room' })

  for (let i = 0; i < 500; i++) a.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: `c${i}`, sdpMLineIndex: 0 } })
  t.ok(await until(() => b.all('ice-candidate').length >= 500, 10_000), 'all 500 arrive')
  t.same(b.all('ice-candidate').map(f => String(f.data.candidate.candidate)), Array.from({ length: 500 }, (_, i) => `c${i}`), '500 candidates across instances arrive in order')
  // One SPUBLISH per relay, or (instance protocol 2, once the instances read each other's advertisement) one per batch.
  const sharded = await calls(cluster, 'spublish') - spublishes
  // (Not bounded above: a membership or heartbeat-time message of the instances may be published in the same window.)
  t.ok(sharded >= 1, `relays are SPUBLISHed (${sharded} in the window of 500 relays)`)
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

/** Pairs across the two instances, streaming through the cluster failover. */
const PAIRS = 4
/**
 * After both instances report /ready 200, relays may still be refused for a
 * while: a command the cluster client had queued for the dead primary times
 * out (REDIS_CONNECT_TIMEOUT_MS, 1 s here) or is refused as past its
 * deadline once it reaches the promoted replica, and either reopens the
 * instance's circuit until the next health check (250 ms here). Seen up to
 * 1.4 s after the later /ready 200; refusals later than this fail.
 */
const SETTLE_MS = 3000
/** Streaming after that: relays must flow again, none refused. */
const STEADY_MS = 1500
/**
 * A relay sent this long before the kill may still have been waiting for the
 * dead primary's answer (outcome_unknown): one event-loop turn of the
 * instance and one Redis round trip, with room for a loaded machine.
 */
const IN_FLIGHT_MS = 500

t.test('a primary fails over inside the cluster: instances recover by themselves, sockets stay open, every message is counted', async (t) => {
  const cluster = await startRedisCluster(t)
  const [s1, s2] = await instances(t, cluster, 2, { REDIS_CONNECT_TIMEOUT_MS: '1000', REDIS_HEALTH_INTERVAL_MS: '250', WS_RATE_PER_S: '2000', WS_RATE_BURST: '2000' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  const n1: Instance = { name: 'node1', ws: s1.ws, http: s1.http }
  const n2: Instance = { name: 'node2', ws: s2.ws, http: s2.http }
  const peers = await pairsAcross(t, n1, n2, PAIRS, 'fo')
  for (const p of peers) p.startStreaming(TICK_MS)
  await sleep(1000)

  // Kill the primary that carries node2's channel (instance:{<its instance id>}): relays to its peers must find the promoted replica.
  const ids = await cluster.client.zrange('instances', 0, -1)
  const node2 = ids.find(id => id.startsWith('node2.'))
  if (node2 === undefined) throw new Error(`node2 not among the instances: ${ids.join(', ')}`)
  const victim = await cluster.primaryOf(`instance:{${node2}}`)
  const killedAt = Date.now()
  cluster.kill(victim)

  const readyAt: number[] = []
  await Promise.all([s1, s2].map(async (s, i) => {
    // /ready may stay 200 if the instance has not noticed yet: wait for the cluster to have a new primary first.
    t.ok(await until(async () => (await cluster.primaries().catch(() => [victim])).every(p => p !== victim), 20_000), 'a replica was promoted')
    t.ok(await until(async () => (await fetch(`${s.http}/ready`)).ok, 20_000), `instance ${i + 1} ready again`)
    readyAt[i] = Date.now()
  }))
  const recoveredAt = Math.max(...readyAt)
  await sleep(SETTLE_MS + STEADY_MS)

  const r = await countStreams(t, peers, 'cluster failover', [{ label: 'SIGKILL primary', at: killedAt }])
  t.comment(`cluster failover: /ready 200 after ${readyAt.map(at => at - killedAt).join(' ms, ')} ms; refused (sent after the kill): ${refusalTimes(peers, killedAt)}`)
  /*
   * Allowed: `unavailable` (not applied: the shard carrying node2's channel
   * had no primary, from the kill until the instances follow the promoted
   * replica; safe to resend) and `outcome_unknown` (a relay the dead primary
   * had received but never answered, or a command the cluster client held
   * for it until it timed out: it cannot tell those apart). Only for
   * messages sent from just before the kill until SETTLE_MS after both
   * instances are ready again. No `peer_not_found`: every peer stays in its
   * room, connected (a failover closes no WebSocket).
   */
  failoverVerdict(t, r, peers, {
    codes: ['unavailable', 'outcome_unknown'],
    refusedWithin: [killedAt - IN_FLIGHT_MS, recoveredAt + SETTLE_MS],
    minAccepted: peers.length * (1000 / TICK_MS),
    minAcceptedAfter: { after: recoveredAt + SETTLE_MS, count: STEADY_MS / TICK_MS / 2 }
  })
  for (const p of peers) p.dispose()

  // Joins work after the failover too.
  await createRoom(s2, 'fo-after')
  const c = await connect(t, s2.ws)
  await join(c, 'fo-after')
  t.pass('a join after the failover')
})
