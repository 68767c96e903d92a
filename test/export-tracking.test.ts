import t from 'tap'
import { spawnSync } from 'node:child_process'
import { buildTestApp } from './helper'
import { startRedis } from './helpers/redis'
import { utcDay } from '../src/store/types'

t.test('export:tracking prints the counts recorded by set_track, as JSON and CSV', async (t) => {
  const redis = await startRedis(t)
  const env = { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix }
  const app = await buildTestApp(t, env)
  for (const ref of ['twitter', 'twitter', 'a,b']) {
    await app.inject({ method: 'POST', url: '/api/set_track', payload: { ref, timestamp: Date.now() } })
  }
  const run = (...args: string[]) => spawnSync(process.execPath, ['dist/cli/export-tracking.js', ...args], {
    env: { PATH: process.env['PATH'], ...env }, encoding: 'utf8', timeout: 20_000
  })

  const asJson = run('--days', '2')
  t.equal(asJson.status, 0, asJson.stderr)
  const parsed = JSON.parse(asJson.stdout)
  t.same(parsed[utcDay()], { twitter: 2, 'a,b': 1 })
  t.equal(Object.keys(parsed).length, 2, 'one entry per day asked for')

  const asCsv = run('--date', utcDay(), '--format', 'csv')
  t.equal(asCsv.status, 0)
  t.same(asCsv.stdout.trim().split('\n').sort(), ['date,ref,count', `${utcDay()},"a,b",1`, `${utcDay()},twitter,2`].sort())

  const bad = run('--format', 'xml')
  t.equal(bad.status, 1)
  t.match(bad.stderr, /--format/)

  const noRedis = spawnSync(process.execPath, ['dist/cli/export-tracking.js'], { env: { PATH: process.env['PATH'] }, encoding: 'utf8' })
  t.equal(noRedis.status, 1)
  t.match(noRedis.stderr, /REDIS_URL/)
})
