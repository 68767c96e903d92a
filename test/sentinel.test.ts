import t from 'tap'
import { loadConfig } from '../src/config'

/*
 * REDIS_SENTINELS configuration. The failover scenario (a primary, a replica,
 * three Sentinels, two instances, the primary SIGKILLed) is not in the suite
 * yet: in one of three CI runs one instance stayed unready after the
 * failover, which is open work in issue 14.
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
