import t from 'tap'
import { Redis } from 'ioredis'
import type { LogFn } from 'pino'
import { createLiveness, type LivenessOptions } from '../src/cluster/liveness'
import { FleetMarker } from '../src/cluster/fleet-marker'
import { RedisLink } from '../src/redis/link'
import { redisKeys } from '../src/redis/keys'
import { INSTANCE_PROTOCOL, INSTANCE_PROTOCOLS } from '../src/signaling/bus'
import type { EndedSession } from '../src/signaling/mesh'
import type { Logger } from '../src/signaling/types'
import { FakeClock, silentLogger } from './helpers/fake-mesh'
import { startRedis, type TestRedis } from './helpers/redis'

/*
 * Liveness (src/cluster/liveness.ts) on its Clock port: a fake clock decides
 * when heartbeats and reaps run and what time they write, against a real
 * redis-server. The fake clock's time is written into the `instances` set,
 * so every instance of a test shares it.
 */

type Teardown = { teardown: (fn: () => unknown) => void }

const DEAD_AFTER_MS = 3000
const HEARTBEAT_MS = DEAD_AFTER_MS / 3
const GRACE_MS = 5000

/** A real RedisLink that remembers what it is running, so a test can wait for the beats it set off. */
class TrackedLink extends RedisLink {
  private readonly running = new Set<Promise<unknown>>()

  override run<T> (op: () => Promise<T>): Promise<T> {
    const p = super.run(op)
    const settled = p.then(() => {}, () => {})
    this.running.add(settled)
    settled.then(() => this.running.delete(settled), () => {})
    return p
  }

  /** Resolves once nothing started through the link is still running. */
  async idle (): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running])
  }
}

interface Harness {
  liveness: ReturnType<typeof createLiveness>
  link: TrackedLink
  client: Redis
  ended: EndedSession[][]
  lost: () => number
  errors: unknown[]
  endCalls: Array<{ peerId: string, owner: string }>
}

let redis: TestRedis

t.before(async () => {
  redis = await startRedis(t)
})

function recordingLogger (errors: unknown[]): Logger {
  const log = silentLogger()
  const error = ((obj: unknown) => { errors.push(obj) }) as unknown as LogFn
  return { ...log, child: () => log, error }
}

async function instance (t: Teardown, clock: FakeClock, node: string, prefix: string, opts: { lazy?: boolean, endSession?: LivenessOptions['endSession'] } = {}): Promise<Harness> {
  const client = new Redis(redis.url, { commandTimeout: 2000, lazyConnect: opts.lazy === true })
  client.on('error', () => {})
  const link = new TrackedLink({ redis: client, log: silentLogger(), timeoutMs: 2000, healthIntervalMs: 200, maxWriteBufferBytes: 1 << 24 })
  const ended: EndedSession[][] = []
  const errors: unknown[] = []
  const endCalls: Array<{ peerId: string, owner: string }> = []
  let lost = 0
  const liveness = createLiveness({
    keyPrefix: prefix,
    node,
    sessionTtlS: 60,
    roomEmptyTtlS: 30,
    deadAfterMs: DEAD_AFTER_MS,
    resumeGraceMs: GRACE_MS,
    log: recordingLogger(errors),
    link,
    clock: clock.forNode(node),
    redis: client,
    keys: redisKeys(prefix),
    marker: new FleetMarker(() => { lost++ }, 0, () => clock.now()),
    endSession: opts.endSession ?? (async (peerId, owner) => {
      endCalls.push({ peerId, owner })
      return { roomId: `room-of-${peerId}`, remaining: [] }
    }),
    onSessionsEnded: (e) => { ended.push(e) }
  })
  t.teardown(async () => {
    await liveness.stop(false)
    link.stop()
    client.disconnect()
  })
  if (opts.lazy !== true) await link.waitHealthy(2000)
  return { liveness, link, client, ended, lost: () => lost, errors, endCalls }
}

/** Moves the fake clock forward, running every due timer in order and waiting for what each set off on Redis. */
async function advance (clock: FakeClock, ms: number, ...running: Harness[]): Promise<void> {
  const until = clock.now() + ms
  for (;;) {
    const timer = clock.takeDue(until)
    if (timer === null) break
    timer.fn()
    for (const h of running) await h.link.idle()
  }
  clock.set(until)
}

const prefix = (): string => `${redis.prefix}${Math.random().toString(36).slice(2, 8)}:`

t.test('start beats at once and then every dead-after/3 on the clock; a second start does nothing', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  t.equal(clock.pending('a'), 0, 'nothing runs before start')
  a.liveness.start()
  a.liveness.start()
  t.equal(clock.pending('a'), 1, 'one beat scheduled')
  await a.link.idle()
  t.equal(Number(await redis.client.zscore(keys.instancesKey, 'a')), clock.now(), 'the first beat wrote the clock\'s time')
  t.same(a.liveness.liveNodes, ['a'])
  t.equal(a.liveness.othersSeen, false)
  t.ok(await redis.client.get(keys.fleetKey), 'the fleet marker is written')
  const before = clock.now()
  await advance(clock, HEARTBEAT_MS, a)
  t.equal(Number(await redis.client.zscore(keys.instancesKey, 'a')), before + HEARTBEAT_MS, 'the next beat came one heartbeat later')
  t.equal(clock.pending('a'), 1, 'and scheduled the one after')
})

t.test('each beat sees the other live instances', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const a = await instance(t, clock, 'a', p)
  const b = await instance(t, clock, 'b', p)
  a.liveness.start()
  await a.link.idle()
  b.liveness.start()
  await b.link.idle()
  t.same([...b.liveness.liveNodes].sort(), ['a', 'b'])
  t.equal(b.liveness.othersSeen, true)
  t.equal(a.liveness.othersSeen, false, 'a has not beaten since b arrived')
  await advance(clock, HEARTBEAT_MS, a, b)
  t.equal(a.liveness.othersSeen, true)
  // b leaves cleanly: its record goes at once, and a sees it gone at its next beat.
  await b.liveness.stop(false)
  t.equal(clock.pending('b'), 0, 'b scheduled nothing more')
  await advance(clock, HEARTBEAT_MS, a)
  t.same(a.liveness.liveNodes, ['a'])
  t.equal(a.liveness.othersSeen, false)
})

t.test('an instance that stops with sessions left is reaped by a survivor after the grace', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p, {
    endSession: async (peerId, owner) => {
      if (peerId === 'moved') return null
      if (peerId === 'roomless') return { roomId: '', remaining: [] }
      return { roomId: 'r', remaining: [{ peerId: 'other', instance: owner }] }
    }
  })
  const b = await instance(t, clock, 'b', p)
  a.liveness.start()
  b.liveness.start()
  await Promise.all([a.link.idle(), b.link.idle()])
  await redis.client.sadd(keys.ownedKey('b'), 'p1', 'moved', 'roomless')
  await b.liveness.stop(true)
  t.equal(Number(await redis.client.zscore(keys.instancesKey, 'b')), 0, 'marked dead at once')
  t.ok(await redis.client.exists(keys.ownedKey('b')), 'its sessions stay for the survivor')

  await advance(clock, HEARTBEAT_MS, a)
  t.equal(await redis.client.get(keys.reapKey('b')), null, 'a judges nobody before its own link has been up a full window')
  await advance(clock, DEAD_AFTER_MS, a)
  t.equal(await redis.client.get(keys.reapKey('b')), 'a', 'then a takes the reap lock')
  t.same(a.ended, [], 'and waits the grace')
  await advance(clock, GRACE_MS, a)
  t.same(a.ended, [[{ peerId: 'p1', roomId: 'r', remaining: [{ peerId: 'other', instance: 'b' }] }]], 'the sessions in rooms are reported once, the moved one not')
  t.equal(await redis.client.exists(keys.ownedKey('b'), keys.reapKey('b')), 0, 'its peer set and the lock are gone')
  t.equal(await redis.client.zscore(keys.instancesKey, 'b'), null, 'and so is its record')
  t.same(a.errors, [])
})

t.test('a reap lock held by another survivor: nothing is scheduled', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  await redis.client.zadd(keys.instancesKey, 0, 'b')
  await redis.client.set(keys.reapKey('b'), 'c', 'PX', 60_000)
  a.liveness.start()
  await advance(clock, DEAD_AFTER_MS + HEARTBEAT_MS, a)
  t.equal(clock.pending('a'), 1, 'only the next beat is pending')
  await advance(clock, GRACE_MS, a)
  t.same(a.endCalls, [])
})

t.test('an instance that comes back before the grace ends is not reaped', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  await redis.client.zadd(keys.instancesKey, 0, 'b')
  await redis.client.sadd(keys.ownedKey('b'), 'p1')
  a.liveness.start()
  await advance(clock, DEAD_AFTER_MS + HEARTBEAT_MS, a)
  t.equal(await redis.client.get(keys.reapKey('b')), 'a')
  // b was frozen, not dead: it beats again shortly before the grace is up.
  await advance(clock, GRACE_MS - 2 * HEARTBEAT_MS, a)
  await redis.client.zadd(keys.instancesKey, clock.now(), 'b')
  await advance(clock, 2 * HEARTBEAT_MS, a)
  t.same(a.endCalls, [], 'none of its sessions ended')
  t.same(a.ended, [])
  t.equal(await redis.client.get(keys.reapKey('b')), null, 'the lock is given back')
  t.same(await redis.client.smembers(keys.ownedKey('b')), ['p1'])
})

t.test('a reap that fails is logged and leaves the lock to expire for another survivor', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p, { endSession: async () => { throw new Error('end failed') } })
  await redis.client.zadd(keys.instancesKey, 0, 'b')
  await redis.client.sadd(keys.ownedKey('b'), 'p1')
  a.liveness.start()
  await advance(clock, DEAD_AFTER_MS + HEARTBEAT_MS + GRACE_MS, a)
  t.equal(a.errors.length, 1, 'one error logged')
  t.match(a.errors[0], { instance: 'b' })
  t.equal(await redis.client.get(keys.reapKey('b')), 'a', 'the lock stays until it expires')
})

t.test('stopping clears the pending reap and the heartbeat', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  await redis.client.zadd(keys.instancesKey, 0, 'b')
  await redis.client.sadd(keys.ownedKey('b'), 'p1')
  await redis.client.sadd(keys.ownedKey('a'), 'mine')
  a.liveness.start()
  await advance(clock, DEAD_AFTER_MS + HEARTBEAT_MS, a)
  t.equal(clock.pending('a'), 2, 'a beat and a reap are pending')
  await a.liveness.stop(false)
  t.equal(clock.pending('a'), 0)
  t.equal(await redis.client.zscore(keys.instancesKey, 'a'), null, 'a left the instances set')
  t.equal(await redis.client.exists(keys.ownedKey('a')), 0, 'with its (empty-handed) peer set')
  await a.liveness.beatNow()
  t.equal(await redis.client.zscore(keys.instancesKey, 'a'), null, 'a beat after stop writes nothing')
  a.liveness.start()
  t.equal(clock.pending('a'), 0, 'nor does a start after stop')
})

t.test('silence: only a gap of dead-after without a beat since the last check counts', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const a = await instance(t, clock, 'a', p)
  a.liveness.start()
  await advance(clock, HEARTBEAT_MS * 5, a)
  t.equal(a.liveness.takeSilence(), false, 'beating steadily')
  // Frozen: the clock moves on without the instance's timers.
  clock.set(clock.now() + DEAD_AFTER_MS)
  t.equal(a.liveness.takeSilence(), true, 'silent since the last beat')
  await advance(clock, 0, a) // the overdue beat runs now
  t.equal(a.liveness.takeSilence(), true, 'the gap it ended is still reported once')
  t.equal(a.liveness.takeSilence(), false, 'then forgotten')
})

t.test('a fleet marker that changed is reported once as a lost registry; rewrite writes a fresh one', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  a.liveness.start()
  await a.link.idle()
  const first = await redis.client.get(keys.fleetKey)
  t.equal(a.lost(), 0)
  await redis.client.del(keys.fleetKey)
  await a.liveness.beatNow()
  t.equal(a.lost(), 1, 'the next beat notices the loss')
  const second = await redis.client.get(keys.fleetKey)
  t.not(second, first, 'a marker re-created after a loss is a new value')
  await redis.client.del(keys.fleetKey, keys.instancesKey)
  const rewritten = await a.liveness.rewrite()
  t.equal(rewritten, await redis.client.get(keys.fleetKey), 'rewrite resolves with the marker now in Redis')
  t.equal(Number(await redis.client.zscore(keys.instancesKey, 'a')), clock.now(), 'and rewrote this instance\'s record')
})

t.test('stopping with sessions left marks the instance dead and keeps its peer set', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  a.liveness.start()
  await a.link.idle()
  await redis.client.sadd(keys.ownedKey('a'), 'p1')
  await a.liveness.stop(true)
  t.equal(Number(await redis.client.zscore(keys.instancesKey, 'a')), 0)
  t.same(await redis.client.smembers(keys.ownedKey('a')), ['p1'])
})

t.test('an instance whose own connection (re)connected judges nobody for a full window', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p, { lazy: true })
  await redis.client.zadd(keys.instancesKey, 0, 'b')
  a.liveness.start() // not connected yet: the first beat fails
  await a.link.idle()
  t.equal(await redis.client.zscore(keys.instancesKey, 'a'), null, 'nothing written while disconnected')
  await a.client.connect()
  await a.link.waitHealthy(2000)
  await advance(clock, DEAD_AFTER_MS - 1, a)
  t.equal(await redis.client.get(keys.reapKey('b')), null, 'connected for less than a window: b is not judged')
  // The connection drops and comes back: the window starts again.
  const back = new Promise(resolve => a.client.once('ready', resolve))
  a.client.disconnect(true)
  await back
  await a.link.waitHealthy(2000)
  await advance(clock, HEARTBEAT_MS, a)
  t.equal(await redis.client.get(keys.reapKey('b')), null, 'not judged right after the reconnection')
  await advance(clock, DEAD_AFTER_MS, a)
  t.equal(await redis.client.get(keys.reapKey('b')), 'a', 'judged a full window after it')
})

t.test('instance protocols: each beat advertises this release\'s versions and reads the others\'; the highest shared one is used, 1 for an instance that advertises nothing', async (t) => {
  const clock = new FakeClock()
  const p = prefix()
  const keys = redisKeys(p)
  const a = await instance(t, clock, 'a', p)
  a.liveness.start()
  await a.link.idle()
  t.equal(await redis.client.hget(keys.instanceProtocolsKey, 'a'), INSTANCE_PROTOCOLS.join(','), 'advertised in its record')
  t.ok(await redis.client.ttl(keys.instanceProtocolsKey) > 0, 'with a TTL')
  // Others, as releases would write them: 1.0.0 writes nothing; a later release speaks N and N-1.
  await redis.client.hset(keys.instanceProtocolsKey, 'future', `${INSTANCE_PROTOCOL},${INSTANCE_PROTOCOL + 1}`, 'odd', 'x,0,-1', 'old', '1')
  t.equal(a.liveness.protocolOf('future'), 1, 'not read until the next beat: the safe default')
  await advance(clock, HEARTBEAT_MS, a)
  t.equal(a.liveness.protocolOf('future'), INSTANCE_PROTOCOL, 'a newer release: the highest version both speak')
  t.equal(a.liveness.protocolOf('old'), 1)
  t.equal(a.liveness.protocolOf('silent'), 1, 'an instance that advertises nothing (1.0.0) is spoken to in version 1')
  t.equal(a.liveness.protocolOf('odd'), 1, 'garbage advertises nothing')
  t.equal(a.liveness.protocolOf('a'), INSTANCE_PROTOCOL)
  await a.liveness.stop(false)
  t.equal(await redis.client.hget(keys.instanceProtocolsKey, 'a'), null, 'a clean stop removes its entry')
})
