import t from 'tap'
import pino from 'pino'
import { loadConfig } from '../src/config'
import { createRedisClient } from '../src/redis/client'
import { RedisLink } from '../src/redis/link'
import { rotateSecret } from '../src/redis/scripts'
import { silentLogger } from './helpers/fake-mesh'
import { startRedis } from './helpers/redis'
import { sleep, until } from './helper'
import type { Logger } from '../src/signaling/types'

/*
 * The circuit breaker on a real redis-server, frozen with SIGSTOP: it opens
 * on the first timeout, fails fast meanwhile, closes once Redis answers, and
 * stays closed: commands that were still waiting on the dropped connection
 * time out later, and those say nothing about the new one.
 */

t.test('a short hang opens the circuit once; after recovery it stays closed under steady traffic', async (t) => {
  const redis = await startRedis(t, { own: true })
  const config = loadConfig({ REDIS_URL: redis.url, REDIS_CONNECT_TIMEOUT_MS: '1500', REDIS_HEALTH_INTERVAL_MS: '100' })
  const client = createRedisClient(config, pino({ level: 'silent' }), 'test')
  const trips: string[] = []
  const log: Logger = { ...silentLogger(), warn: ((obj: { reason?: string }) => { trips.push(obj.reason ?? '') }) as Logger['warn'] }
  const link = new RedisLink({ redis: client, log, timeoutMs: 1500, healthIntervalMs: 100, maxWriteBufferBytes: 1 << 24 })
  t.teardown(() => {
    link.stop()
    client.disconnect()
  })
  await client.connect()
  t.ok(await link.waitHealthy(2000), 'closed once the first health check answered')

  // Steady traffic: a command every 10 ms, each one either answered or failed.
  let answered = 0
  const state = { running: true }
  const traffic = (async () => {
    while (state.running) {
      link.run(() => client.ping()).then(() => { answered++ }, () => {})
      await sleep(10)
    }
  })()
  t.teardown(() => { state.running = false })

  await sleep(200)
  redis.pause()
  t.teardown(() => redis.resume())
  t.ok(await until(() => !link.healthy, 3000, 5), 'the first timeout opened the circuit')
  const started = Date.now()
  await t.rejects(link.run(() => client.ping()), 'operations fail while it is open')
  t.ok(Date.now() - started < 100, 'at once, without waiting for Redis')
  // Back at once: the new connection is up while commands sent on the dropped
  // one before the hang was noticed are still waiting for their timeouts.
  redis.resume()
  const resumedAt = Date.now()
  t.ok(await until(() => link.healthy, 5000, 5), 'closed again once Redis answers')
  // Not held up by the health check and commands still stuck on the dropped
  // connection (they time out 1.5 s after they were sent).
  t.ok(Date.now() - resumedAt < 1500, `closed ${Date.now() - resumedAt} ms after SIGCONT, before the stale commands time out`)
  const answeredAtRecovery = answered
  // Long enough for every command of the dropped connection to time out.
  await sleep(2500)
  state.running = false
  await traffic
  t.equal(trips.length, 1, `opened exactly once (${JSON.stringify(trips)})`)
  t.ok(link.healthy, 'still closed')
  t.ok(answered - answeredAtRecovery > 50, `traffic flowed after recovery (${answered - answeredAtRecovery} answered)`)
})

t.test('writes carry a deadline in Redis\'s clock: one that runs after it is refused by the script', async (t) => {
  const redis = await startRedis(t, { own: true })
  const config = loadConfig({ REDIS_URL: redis.url, REDIS_CONNECT_TIMEOUT_MS: '400' })
  const client = createRedisClient(config, pino({ level: 'silent' }), 'test')
  const link = new RedisLink({ redis: client, log: silentLogger(), timeoutMs: 400, healthIntervalMs: 100, maxWriteBufferBytes: 1 << 24 })
  t.teardown(() => {
    link.stop()
    client.disconnect()
  })
  await client.connect()
  t.ok(await link.waitHealthy(2000))
  const deadline = link.deadline()
  const [seconds, micros] = await client.time()
  const redisNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
  t.ok(deadline > redisNow && deadline <= redisNow + 400, `the deadline lies within the timeout, in Redis's clock (${deadline - redisNow} ms ahead)`)

  const key = `${redis.prefix}session:p`
  await client.hset(key, 'secret', 'old')
  await t.rejects(client.eval(rotateSecret.lua, 1, key, 'late', redisNow - 1), /EXPIRED/, 'a write past its deadline is refused')
  t.equal(await client.hget(key, 'secret'), 'old', 'and changed nothing')
  t.equal(await client.eval(rotateSecret.lua, 1, key, 'new', link.deadline()), 1, 'in time, it runs')
  t.equal(await client.hget(key, 'secret'), 'new')
})
