import t from 'tap'
import pino from 'pino'
import { startRedis } from './helpers/redis'
import { startFakeSentinel } from './helpers/fake-sentinel'
import { sleep, until } from './helper'
import { loadConfig } from '../src/config'
import { createRedisClient } from '../src/redis/client'

/*
 * REDIS_SENTINELS configuration, and the race that left an instance unready
 * after a failover (issue 14), reproduced exactly against a fake Sentinel.
 * The failover scenario itself (a primary, a replica, three Sentinels, two
 * instances, the primary SIGKILLed) is not in the suite yet.
 */

t.test('config: exactly one way to reach Redis, sentinels as host:port', async (t) => {
  t.throws(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_SENTINELS: '127.0.0.1:2' }), /REDIS_URL and REDIS_SENTINELS/)
  t.throws(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_HOST: '127.0.0.1' }), /REDIS_URL and REDIS_HOST/)
  t.throws(() => loadConfig({ REDIS_SENTINELS: '127.0.0.1' }), /REDIS_SENTINELS: "127.0.0.1" is not host:port/)
  const config = loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379, [::1]:26380' })
  t.equal(config.REDIS_SENTINEL_NAME, 'mymaster', 'default primary name')
  // An override that blanks REDIS_URL (compose cannot unset a variable) leaves one way.
  t.equal(loadConfig({ REDIS_URL: '', REDIS_SENTINELS: '127.0.0.1:26379' }).REDIS_URL, undefined, 'an empty optional variable is unset')
})

t.test('a reconnect cut short by the failover detector does not leave the client ended for good', async (t) => {
  // What a real failover does now and then (see OwnedRedis in
  // src/redis/client.ts): the primary drops the connection, the reconnect asks
  // the Sentinel for the primary, and +switch-master reaches the failover
  // detector of the dropped connection before the Sentinel has answered.
  const redis = await startRedis(t, { own: true })
  const sentinel = await startFakeSentinel(t, { host: '127.0.0.1', port: Number(new URL(redis.url).port) })
  const config = loadConfig({ REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`, REDIS_CONNECT_TIMEOUT_MS: '1000' })
  const client = createRedisClient(config, pino({ level: 'silent' }), 'test')
  t.teardown(() => client.disconnect())
  await client.connect()
  t.ok(await until(() => sentinel.subscribers > 0, 2000, 5), 'the failover detector listens')

  sentinel.hold()
  const before = sentinel.lookups
  await redis.client.call('CLIENT', 'KILL', 'TYPE', 'normal')
  t.ok(await until(() => sentinel.pending > 0 && sentinel.lookups > before, 3000, 5), 'the reconnect is asking the Sentinel for the primary')
  t.equal(client.status, 'connecting')
  sentinel.switchMaster()
  await sleep(50)
  sentinel.release()
  t.ok(await until(() => client.status === 'ready', 5000, 10), `connected again (status ${client.status})`)
  t.equal(await client.ping(), 'PONG', 'and answering')

  await client.quit()
  await sleep(300)
  t.equal(client.status, 'end', 'an end that was asked for stays final')
})
