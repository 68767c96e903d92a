import t from 'tap'
import { buildTestApp, STORE_MODES, storeEnv } from './helper'
import { utcDay } from '../src/store/types'

/*
 * Shared spec §5: at most TRACK_MAX_REFS_PER_DAY [1000] distinct refs per UTC
 * day; further refs are counted under the field `other`, while refs already
 * counted that day keep counting.
 */

const EXPECTED = { r1: 2, r2: 1, r3: 1, r4: 1, r5: 1, other: 4 }

for (const mode of STORE_MODES) {
  t.test(`TRACK_MAX_REFS_PER_DAY caps distinct refs, the rest count under "other" (${mode} store)`, async (t) => {
    const { env, redis } = await storeEnv(t, mode)
    const app = await buildTestApp(t, { ...env, TRACK_MAX_REFS_PER_DAY: '5' })
    const day = utcDay()
    const track = async (ref: string) => {
      const res = await app.inject({ method: 'POST', url: '/api/set_track', payload: { ref, timestamp: Date.now() } })
      t.equal(res.statusCode, 200, `set_track ${ref}`)
    }
    for (const ref of ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8', 'r1', 'r8']) await track(ref)
    if (utcDay() !== day) {
      t.comment('the UTC day changed during the test: counts not checked')
      return
    }

    t.same(await app.store.referrerCounts(day), EXPECTED, 'r1 counted twice, r2..r5 once, r6, r7, r8, r8 under other')
    if (redis !== undefined) {
      const key = `${redis.prefix}referrers:daily:${day}`
      const raw = await redis.client.hgetall(key)
      t.same(Object.fromEntries(Object.entries(raw).map(([ref, n]) => [ref, Number(n)])), EXPECTED, `the hash ${key.slice(redis.prefix.length)} in Redis`)
      t.ok(await redis.client.ttl(key) > 29 * 86400, 'still kept 30 days')
    }
  })
}

t.test('TRACK_MAX_REFS_PER_DAY defaults to 1000 distinct refs', async (t) => {
  const app = await buildTestApp(t)
  const day = utcDay()
  const track = async (ref: string) => (await app.inject({ method: 'POST', url: '/api/set_track', payload: { ref, timestamp: Date.now() } })).statusCode
  let ok = 0
  for (let i = 1; i <= 1000; i++) if (await track(`ref${i}`) === 200) ok++
  t.equal(ok, 1000, '1000 distinct refs tracked')
  t.equal(await track('one-too-many'), 200)
  const counts = await app.store.referrerCounts(day)
  if (utcDay() !== day) {
    t.comment('the UTC day changed during the test: counts not checked')
    return
  }
  t.equal(counts['one-too-many'], undefined, 'a ref beyond the first 1000 is not a field of its own')
  t.equal(counts['other'], 1, 'it counts under other')
  t.equal(Object.keys(counts).filter(ref => ref !== 'other').length, 1000, 'at most 1000 distinct refs')
})
