import t, { type Test } from 'tap'
import { startRedis, type TestRedis } from './helpers/redis'
import { createRoom, postJson, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { sha256, splitToken } from '../src/signaling/tokens'
import { sleep, until } from './helper'

/*
 * Protocol §4: every Redis key has a TTL, at every moment. Real server
 * processes on a real redis-server; the test reads the keys under its own
 * prefix directly (SCAN + PTTL) and flags any key without an expiry (-1).
 */

type Env = Record<string, string>

async function server (t: Test, redis: TestRedis, env: Env = {}): Promise<ServerProcess> {
  return await startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    LOG_LEVEL: 'warn',
    DISABLE_JOIN_RATE_LIMIT: 'true',
    // Heartbeat every 20 s: nothing the heartbeat does can hide a missing TTL during a test.
    INSTANCE_DEAD_AFTER_MS: '60000',
    ...env
  })
}

async function scanKeys (redis: TestRedis, pattern = '*'): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.client.scan(cursor, 'MATCH', `${redis.prefix}${pattern}`, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys
}

/** Keys under the test's prefix that have no expiry (PTTL -1); keys gone meanwhile (-2) do not count. */
async function keysWithoutTtl (redis: TestRedis): Promise<string[]> {
  const keys = await scanKeys(redis)
  if (keys.length === 0) return []
  const replies = await redis.client.pipeline(keys.map(key => ['pttl', key])).exec()
  return keys.filter((_, i) => replies?.[i]?.[1] === -1).map(key => key.slice(redis.prefix.length)).sort()
}

/** Samples the keys every few milliseconds in the background, collecting every key ever seen without a TTL. */
function watchTtls (t: Test, redis: TestRedis): { offenders: Set<string>, samples: () => number, stop: () => Promise<void> } {
  const offenders = new Set<string>()
  const state = { running: true }
  let samples = 0
  const loop = (async () => {
    while (state.running) {
      for (const key of await keysWithoutTtl(redis).catch(() => [])) offenders.add(key)
      samples++
      await sleep(5)
    }
  })()
  const stop = async () => {
    state.running = false
    await loop
  }
  t.teardown(stop)
  return { offenders, samples: () => samples, stop }
}

/** A readable form of a key for reports: peer ids and instance ids replaced by placeholders. */
const shape = (key: string): string => key.replace(/^(session|socket):[^:]+/, '$1:<peerId>').replace(/^instance:[^:]+/, 'instance:<id>')

async function connections (s: ServerProcess): Promise<number> {
  const text = await (await fetch(`${s.http}/metrics`)).text()
  return Number(/^privydrop_ws_connections (\d+)$/m.exec(text)?.[1] ?? NaN)
}

t.test('instance:<id>:peers has a TTL as soon as a peer joins, long before the next heartbeat', async (t) => {
  const redis = await startRedis(t)
  const s = await server(t, redis)
  await createRoom(s, 'owned')
  const a = await connect(t, s.ws)
  await join(a, 'owned') // joinResponse: the join's writes are in Redis

  const owned = await scanKeys(redis, 'instance:*:peers')
  t.equal(owned.length, 1, 'the instance records the session it owns')
  for (const key of owned) {
    const ttl = await redis.client.pttl(key)
    t.ok(ttl > 0, `${shape(key.slice(redis.prefix.length))} has a TTL right after the join (PTTL ${ttl})`)
  }
  t.same((await keysWithoutTtl(redis)).map(shape), [], 'no key without a TTL')
})

t.test('a token rotated after Redis lost its data leaves no key without a TTL', async (t) => {
  const redis = await startRedis(t, { own: true })
  const s = await server(t, redis, { RESUME_GRACE_MS: '60000' })
  await createRoom(s, 'flushed')
  const a = await connect(t, s.ws)
  const b = await connect(t, s.ws)
  await join(a, 'flushed')
  await join(b, 'flushed')

  await redis.client.flushall()
  const watcher = watchTtls(t, redis)
  b.drop()
  t.ok(await until(async () => await connections(s) === 1), 'the server holds B')

  // (No MONITOR to show the resume's writes: ioredis can read a MONITOR line
  // as the reply to another command when the machine is busy, "Command queue
  // state error", and the watcher samples the keys throughout anyway.)
  const b2 = await connect(t, `${s.ws}?resume=${encodeURIComponent(b.token)}`)
  t.equal(b2.peerId, b.peerId, 'resumed on the same instance')
  t.not(b2.token, b.token, 'token rotated')
  // The rotation reaches Redis after the welcome: wait for the new secret's
  // hash itself (comparing with a value read now would miss a write that
  // landed before the read). While the lost record has not been rewritten yet,
  // the rotation writes nothing (its script needs the record) and this waits
  // the 3 s out; the check below comes after the resume's writes either way.
  const sessionKey = `${redis.prefix}session:${b.peerId}`
  const rotated = sha256(splitToken(b2.token)?.secret ?? '').toString('hex')
  await until(async () => await redis.client.hget(sessionKey, 'secret') === rotated, 3000)
  const missing = (await keysWithoutTtl(redis)).map(shape)
  await watcher.stop()
  t.same(missing, [], 'no key without a TTL after the rotation')
  t.same([...watcher.offenders].map(shape).sort(), [], `no key without a TTL at any sampled moment (${watcher.samples()} samples)`)
})

t.test('after a mixed scenario across two instances no key lacks a TTL, at any sampled moment', async (t) => {
  const redis = await startRedis(t, { own: true })
  const env = { RESUME_GRACE_MS: '10000', DISABLE_JOIN_RATE_LIMIT: 'false', JOIN_RATE_LIMIT_MAX: '1000' }
  const [s1, s2] = await Promise.all([server(t, redis, { ...env, INSTANCE_ID: 'node1' }), server(t, redis, { ...env, INSTANCE_ID: 'node2' })])
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  const watcher = watchTtls(t, redis)

  await createRoom(s1, 'mixed')
  t.equal((await postJson(s2, '/api/set_track', { ref: 'mixed-test', timestamp: Date.now() })).status, 200)
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  const c = await connect(t, s1.ws)
  await join(a, 'mixed')
  await join(b, 'mixed')
  await join(c, 'mixed')

  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0' } })
  await b.next('offer')
  b.send('answer', { peerId: a.peerId, answer: { type: 'answer', sdp: 'v=0' } })
  await a.next('answer')

  t.same((await c.request('leave', { roomId: 'mixed' }, 'leaveResponse')).data, { success: true, roomId: 'mixed' })
  await join(c, 'mixed')
  const left = await postJson(s2, '/api/leave_room', { roomId: 'mixed', peerId: c.peerId, token: c.token })
  t.same(await left.json(), { success: true, message: 'Successfully left the room' }, 'leave_room on the other instance')
  // B hears both of C's departures before it drops; otherwise they are held
  // for it and replayed to the resumed connection, ahead of A's below.
  t.ok(await until(() => b.all('peer-disconnected').filter(f => f.data.peerId === c.peerId).length === 2), 'B heard C leave twice')

  b.drop()
  t.ok(await until(async () => await connections(s2) === 0), 'node2 holds B')
  const b2 = await connect(t, `${s1.ws}?resume=${encodeURIComponent(b.token)}`)
  t.equal(b2.peerId, b.peerId, 'B resumed on the other instance')
  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=1' } })
  t.equal((await b2.next('offer')).data.offer.sdp, 'v=1', 'relay after the move')

  await a.close()
  t.same((await b2.next('peer-disconnected')).data, { peerId: a.peerId })

  const missing = (await keysWithoutTtl(redis)).map(shape)
  await watcher.stop()
  t.same(missing, [], 'no key without a TTL at the end')
  t.same([...watcher.offenders].map(shape).sort(), [], `no key without a TTL at any sampled moment (${watcher.samples()} samples)`)
})
