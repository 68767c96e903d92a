import t from 'tap'
import { Redis } from 'ioredis'
import { decodeBus, decodePayload, encodeBatch, encodeBus } from '../src/cluster/codec'
import { redisKeys } from '../src/redis/keys'
import { INSTANCE_PROTOCOL, INSTANCE_PROTOCOLS, type BusMessage } from '../src/signaling/bus'
import { DEAD_AFTER_MS, eventually, redisWorld } from './helpers/mesh-world'
import { startRedis } from './helpers/redis'
import { buildTestApp } from './helper'
import { version } from '../package.json'

/*
 * The versioned instance protocol (src/signaling/bus.ts INSTANCE_PROTOCOLS):
 * version 2 carries several messages for one instance in one pub/sub
 * payload; an instance that advertises nothing (release 1.0.0) keeps getting
 * one message per payload, which is all it can read. The upgrade test
 * (test/upgrade.test.ts) runs the real previous release against this one.
 */

const relay = (n: number, frame = `{"type":"offer","data":{"n":${n}}}`): BusMessage =>
  ({ kind: 'D', origin: 'a', roomId: 'r', from: 'p', epoch: 0, type: 'offer', id: `o${n}`, broadcast: false, targets: [['q', n]], frame })

t.test('this release speaks its version and the one before', async (t) => {
  t.ok(INSTANCE_PROTOCOLS.includes(INSTANCE_PROTOCOL - 1), 'N-1 (a rolling deploy from the previous release, a rollback to it)')
  t.equal(INSTANCE_PROTOCOL, 2)
})

t.test('a batch carries messages in order and verbatim; a single message stays a version-1 payload', async (t) => {
  const messages: BusMessage[] = [relay(1), { kind: 'M', origin: 'a', roomId: 'r', peerId: 'p', node: 'b' }, relay(2, '{"type":"offer","data":{"sdp":"v=0\\r\\nx=é😀"}}'), { kind: 'T', origin: 'a', peerId: 'p' }]
  const batch = encodeBatch(messages.map(encodeBus))
  t.same(decodePayload(batch), messages)
  t.same(decodePayload(encodeBus(relay(3))), [relay(3)], 'version 1, as 1.0.0 sends it')
  t.equal(decodeBus(batch), null, 'a version-1 reader (1.0.0) cannot read a batch: only instances that advertise 2 get one')
})

t.test('malformed batches are dropped; a malformed message in a batch is dropped alone', async (t) => {
  const good = encodeBus(relay(1))
  t.equal(decodePayload(`["B",[${good.length}]]`), null, 'no body')
  t.equal(decodePayload(`["B",[${good.length + 1}]]\n${good}`), null, 'lengths that do not add up')
  t.equal(decodePayload('["B",[]]\n'), null, 'empty')
  t.equal(decodePayload(`["B",[1,x]]\n${good}`), null, 'not JSON')
  t.equal(decodePayload(`["B",[-1]]\n${good}`), null, 'not lengths')
  t.same(decodePayload(`["B",[${good.length},3]]\n${good}xyz`), [relay(1), null], 'the good one survives')
})

t.test('on Redis: an instance that advertises 2 gets one payload per turn; one that advertises nothing (1.0.0) gets one payload per message', async (t) => {
  const redis = await startRedis(t)
  const prefix = `${redis.prefix}ip:`
  const keys = redisKeys(prefix)
  const world = redisWorld(t, { redis }, prefix)
  const a = await world.node('a')
  const b = await world.node('b')
  // A stand-in for an instance of 1.0.0: alive in the instances set, subscribed to its channel, advertising nothing.
  const old = new Redis(redis.url, { lazyConnect: true })
  await old.connect()
  t.teardown(() => old.disconnect())
  const oldPayloads: string[] = []
  old.on('message', (_channel: string, payload: string) => { oldPayloads.push(payload) })
  await old.subscribe(keys.channel('old'))
  await redis.client.zadd(keys.instancesKey, Date.now() + 60_000, 'old')
  // A tap on b's channel counts what crosses Redis.
  const tap = new Redis(redis.url, { lazyConnect: true })
  await tap.connect()
  t.teardown(() => tap.disconnect())
  const bPayloads: string[] = []
  tap.on('message', (_channel: string, payload: string) => { bPayloads.push(payload) })
  await tap.subscribe(keys.channel('b'))

  t.ok(await eventually(world, async () => await redis.client.hget(keys.instanceProtocolsKey, 'b') === '1,2'), 'b advertises 1,2')
  await world.elapse(DEAD_AFTER_MS) // a reads the others' records with its next beats

  const toB = Array.from({ length: 20 }, (_, i) => relay(i + 1))
  const toOld = Array.from({ length: 20 }, (_, i) => relay(i + 101))
  const sent = await Promise.all([...toB.map(m => a.mesh.send('b', m)), ...toOld.map(m => a.mesh.send('old', m))])
  t.ok(sent.every(Boolean), 'all 40 received (PUBLISH reached a subscriber)')
  t.ok(await eventually(world, () => b.messages.length >= 20 && oldPayloads.length >= 20), 'delivered')
  t.same(b.messages, toB, 'b got every message once, in order')
  t.equal(bPayloads.length, 1, 'in one payload (instance protocol 2)')
  t.equal(oldPayloads.length, 20, 'the old instance got one payload per message')
  t.same(oldPayloads.map(decodeBus), toOld, 'each readable by a version-1 decoder, in order')
})

t.test('privydrop_build_info shows the release and the protocols it speaks', async (t) => {
  const app = await buildTestApp(t, { METRICS_ON_MAIN_PORT: 'true' })
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  const line = res.body.split('\n').find(l => l.startsWith('privydrop_build_info{'))
  t.equal(line, `privydrop_build_info{version="${version}",protocol="2",protocols="1,2",wire="1"} 1`)
})
