import t from 'tap'
import { Redis } from 'ioredis'
import { createMemoryStore } from '../src/store/memory'
import { createRedisStore } from '../src/store/redis'
import { RedisLink } from '../src/redis/link'
import { silentLogger } from './helpers/fake-mesh'
import type { Store, StoreLimits } from '../src/store/types'
import { startRedis, type TestRedis } from './helpers/redis'
import { STORE_MODES, storeTime, type StoreMode } from './helper'

type Teardown = { teardown: (fn: () => unknown) => void }

const LIMITS: StoreLimits = { instanceId: 'test-instance', roomTtlS: 60, roomEmptyTtlS: 30, joinLimitMax: 2, joinLimitWindowMs: 1000, trackMaxRefsPerDay: 1000 }

/** A store under test, and `elapse` to let its TTLs run out (see storeTime). */
async function makeStore (t: Teardown, mode: StoreMode, limits: Partial<StoreLimits> = {}): Promise<{ store: Store, elapse: (ms: number) => Promise<void>, redis?: TestRedis }> {
  const merged = { ...LIMITS, ...limits }
  const { now, elapse } = storeTime(mode)
  if (mode === 'memory') {
    // Expiry is judged with `now()` on every read (the sweep only frees memory,
    // on the same clock), so moving the clock is all it takes.
    const store = createMemoryStore({ ...merged, now })
    t.teardown(() => store.close())
    return { store, elapse }
  }
  const redis = await startRedis(t)
  const client = new Redis(redis.url, { commandTimeout: 2000 })
  const link = new RedisLink({ redis: client, log: silentLogger(), timeoutMs: 2000, healthIntervalMs: 1000, maxWriteBufferBytes: 1 << 24 })
  t.teardown(async () => {
    link.stop()
    await client.quit()
  })
  await link.waitHealthy(2000)
  return { store: createRedisStore({ ...merged, redis: client, link, keyPrefix: redis.prefix, ownedTtlS: 600 }), elapse, redis }
}

// One contract, two implementations: every assertion below holds for both.
for (const mode of STORE_MODES) {
  t.test(`${mode} store`, async (t) => {
    t.test('a room is created once; a second create of a live id is refused', async (t) => {
      const { store } = await makeStore(t, mode)
      t.equal(await store.roomExists('r1'), false)
      t.equal(await store.createRoom('r1'), true)
      t.equal(await store.roomExists('r1'), true)
      t.equal(await store.createRoom('r1'), false)
    })

    t.test('concurrent creates of one id: exactly one wins', async (t) => {
      const { store } = await makeStore(t, mode)
      const results = await Promise.all(Array.from({ length: 20 }, () => store.createRoom('race')))
      t.equal(results.filter(Boolean).length, 1)
    })

    t.test('join: unknown room, members, idempotent rejoin, capacity', async (t) => {
      const { store } = await makeStore(t, mode)
      t.same(await store.joinRoom('nope', 'p1', 2), { ok: false, code: 'room_not_found' })
      await store.createRoom('room')
      t.same(await store.joinRoom('room', 'p1', 2), { ok: true, members: [{ peerId: 'p1', instance: 'test-instance' }] })
      const second = await store.joinRoom('room', 'p2', 2)
      t.ok(second.ok)
      if (second.ok) t.same(second.members.map(m => m.peerId).sort(), ['p1', 'p2'], 'members, each with its instance')
      t.same(await store.joinRoom('room', 'p3', 2), { ok: false, code: 'room_full' })
      const again = await store.joinRoom('room', 'p2', 2)
      t.ok(again.ok, 'a member rejoining a full room is accepted')
      t.equal(await store.peerRoom('p1'), 'room')
      t.equal(await store.peerRoom('p3'), null)
      t.same((await store.roomMembers('room')).sort(), ['p1', 'p2'])
    })

    t.test('leave: only members leave; the binding goes with them', async (t) => {
      const { store } = await makeStore(t, mode)
      await store.createRoom('room')
      await store.joinRoom('room', 'p1', 4)
      await store.joinRoom('room', 'p2', 4)
      t.equal(await store.leaveRoom('room', 'stranger'), false)
      t.equal(await store.leaveRoom('room', 'p1'), true)
      t.equal(await store.leaveRoom('room', 'p1'), false, 'second leave is a no-op')
      t.equal(await store.peerRoom('p1'), null)
      t.same(await store.roomMembers('room'), ['p2'])
      t.equal(await store.roomExists('room'), true)
    })

    t.test('a room expires ROOM_TTL after creation when nobody joins', async (t) => {
      const { store, elapse } = await makeStore(t, mode, { roomTtlS: 1 })
      await store.createRoom('brief')
      await elapse(400)
      t.equal(await store.roomExists('brief'), true, 'alive within the TTL')
      await elapse(900)
      t.equal(await store.roomExists('brief'), false, 'gone after it')
      t.equal(await store.createRoom('brief'), true, 'its id is free again')
    })

    t.test('joining refreshes the TTL; an emptied room gets the empty TTL', async (t) => {
      const { store, elapse } = await makeStore(t, mode, { roomTtlS: 2, roomEmptyTtlS: 1 })
      await store.createRoom('room')
      await elapse(1200)
      await store.joinRoom('room', 'p1', 4)
      await elapse(1200)
      t.equal(await store.roomExists('room'), true, 'join pushed the deadline out')
      await store.leaveRoom('room', 'p1')
      await elapse(1300)
      t.equal(await store.roomExists('room'), false, 'emptied room expired after the empty TTL')
    })

    t.test('touchRooms keeps an occupied room and its bindings alive', async (t) => {
      const { store, elapse } = await makeStore(t, mode, { roomTtlS: 1 })
      await store.createRoom('room')
      await store.joinRoom('room', 'p1', 4)
      for (let i = 0; i < 4; i++) {
        await elapse(400)
        await store.touchRooms([{ roomId: 'room', peerIds: ['p1'] }])
      }
      t.equal(await store.roomExists('room'), true, 'still alive after 1.6 s with a 1 s TTL')
      t.equal(await store.peerRoom('p1'), 'room')
      await store.createRoom('empty')
      await elapse(400)
      await store.touchRooms([{ roomId: 'empty', peerIds: [] }])
      await elapse(700)
      t.equal(await store.roomExists('empty'), false, 'an unoccupied room is not kept alive')
    })

    t.test('join rate limit: sliding window per IP', async (t) => {
      const { store, elapse } = await makeStore(t, mode, { joinLimitMax: 2, joinLimitWindowMs: 1000 })
      t.same(await store.hitJoinRateLimit('1.1.1.1'), { allowed: true, remaining: 1, retryAfterS: 0 })
      await elapse(600)
      t.same(await store.hitJoinRateLimit('1.1.1.1'), { allowed: true, remaining: 0, retryAfterS: 0 })
      const refused = await store.hitJoinRateLimit('1.1.1.1')
      t.equal(refused.allowed, false)
      t.equal(refused.remaining, 0)
      t.equal(refused.retryAfterS, 1)
      t.equal((await store.hitJoinRateLimit('2.2.2.2')).allowed, true, 'other IPs unaffected')
      await elapse(500)
      t.same(await store.hitJoinRateLimit('1.1.1.1'), { allowed: true, remaining: 0, retryAfterS: 0 }, 'the first hit slid out of the window, the second still counts')
      t.equal((await store.hitJoinRateLimit('1.1.1.1')).allowed, false, 'so the window is full again at once')
    })

    t.test('referrer counts per day', async (t) => {
      const { store } = await makeStore(t, mode)
      await store.incrementReferrer('2026-11-21', 'twitter')
      await store.incrementReferrer('2026-11-21', 'twitter')
      await store.incrementReferrer('2026-11-21', 'producthunt')
      await store.incrementReferrer('2026-11-20', 'twitter')
      t.same(await store.referrerCounts('2026-11-21'), { twitter: 2, producthunt: 1 })
      t.same(await store.referrerCounts('2026-11-20'), { twitter: 1 })
      t.same(await store.referrerCounts('2026-01-01'), {})
    })

    if (mode === 'redis') {
      t.test('keys keep the deployed names under KEY_PREFIX, each with a TTL', async (t) => {
        const { store, redis } = await makeStore(t, mode)
        if (redis === undefined) throw new Error('redis expected')
        const p = redis.prefix
        await store.createRoom('room')
        await store.joinRoom('room', 'peer1', 4)
        await store.hitJoinRateLimit('9.9.9.9')
        await store.incrementReferrer('2026-11-21', 'x')
        const keys = (await redis.client.keys(`${p}*`)).sort()
        t.same(keys, [
          `${p}ratelimit:join:9.9.9.9`,
          `${p}referrers:daily:2026-11-21`,
          `${p}room:room`,
          `${p}room:room:peers`,
          `${p}room:room:sockets`,
          `${p}socket:peer1`
        ])
        t.same(await redis.client.hgetall(`${p}room:room:peers`), { peer1: 'test-instance' }, 'routing: member → instance')
        for (const key of keys) t.ok(await redis.client.pttl(key) > 0, `${key} has a TTL`)
        t.ok(await redis.client.hget(`${p}room:room`, 'created_at'), 'room hash has created_at')
        t.equal(await redis.client.get(`${p}socket:peer1`), 'room')
        t.same(await redis.client.smembers(`${p}room:room:sockets`), ['peer1'])
        t.ok(await redis.client.ttl(`${p}referrers:daily:2026-11-21`) > 29 * 86400, 'referrers kept 30 days')
        t.ok(await redis.client.ttl(`${p}room:room`) > 50, 'room TTL is ROOM_TTL_S')
        await store.leaveRoom('room', 'peer1')
        const ttl = await redis.client.ttl(`${p}room:room`)
        t.ok(ttl > 0 && ttl <= 30, `emptied room has the empty TTL (${ttl})`)
      })
    }
  })
}
