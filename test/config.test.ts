import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { allowedOrigins, loadConfig, normalizeEnv, trustProxyOption } from '../src/config'

t.test('defaults match the documented table', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    PORT: 3001,
    HOST: '0.0.0.0',
    KEY_PREFIX: '',
    LOG_LEVEL: 'info',
    ROOM_TTL_S: 86400,
    ROOM_EMPTY_TTL_S: 900,
    ROOM_MAX_PEERS: 16,
    JOIN_RATE_LIMIT_MAX: 2,
    JOIN_RATE_LIMIT_WINDOW_S: 5,
    DISABLE_JOIN_RATE_LIMIT: false,
    LOGS_DEBUG_ENABLED: true,
    TURN_TTL_S: 3600,
    TRUST_PROXY: 'false'
  })
  t.equal(config.REDIS_URL, undefined, 'no Redis unless configured')
})

t.test('numbers are parsed and a bad value names the variable', async (t) => {
  t.equal(loadConfig({ PORT: '8080' }).PORT, 8080)
  t.throws(() => loadConfig({ PORT: 'abc' }), /PORT/)
  t.throws(() => loadConfig({ ROOM_MAX_PEERS: '1' }), /ROOM_MAX_PEERS/)
  t.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), /LOG_LEVEL/)
})

t.test('boolean switches accept true/false, 1/0, yes/no and on/off in any case; empty is false', async (t) => {
  for (const word of ['1', 'true', 'yes', 'on', 'TRUE', ' Yes ', 'On']) {
    t.equal(loadConfig({ DISABLE_JOIN_RATE_LIMIT: word }).DISABLE_JOIN_RATE_LIMIT, true, `${JSON.stringify(word)} is true`)
  }
  for (const word of ['0', 'false', 'no', 'off', 'FALSE', ' No ', 'Off', '', ' ']) {
    t.equal(loadConfig({ DISABLE_JOIN_RATE_LIMIT: word }).DISABLE_JOIN_RATE_LIMIT, false, `${JSON.stringify(word)} is false`)
  }
  t.equal(loadConfig({ DOCS_ENABLED: '' }).DOCS_ENABLED, false, 'empty turns off a switch that defaults to on')
  t.throws(() => loadConfig({ DISABLE_JOIN_RATE_LIMIT: 'maybe' }), /DISABLE_JOIN_RATE_LIMIT/)
})

t.test('debug log endpoint is off by default in production only', async (t) => {
  t.equal(loadConfig({ NODE_ENV: 'production' }).LOGS_DEBUG_ENABLED, false)
  t.equal(loadConfig({ NODE_ENV: 'development' }).LOGS_DEBUG_ENABLED, true)
  t.equal(loadConfig({ NODE_ENV: 'production', LOGS_DEBUG_ENABLED: '1' }).LOGS_DEBUG_ENABLED, true)
})

t.test('metrics stay off the public port in production only, and no separate listener unless asked for', async (t) => {
  const dev = loadConfig({})
  t.equal(dev.METRICS_PORT, undefined, 'no metrics listener by default')
  t.equal(dev.METRICS_HOST, '127.0.0.1', 'a metrics listener binds loopback by default')
  t.equal(dev.METRICS_ON_MAIN_PORT, true)
  t.equal(loadConfig({ NODE_ENV: 'production' }).METRICS_ON_MAIN_PORT, false)
  t.equal(loadConfig({ NODE_ENV: 'production', METRICS_ON_MAIN_PORT: 'yes' }).METRICS_ON_MAIN_PORT, true)
  t.equal(loadConfig({ METRICS_PORT: '9091' }).METRICS_PORT, 9091)
  t.throws(() => loadConfig({ METRICS_PORT: 'abc' }), /METRICS_PORT/)
  t.throws(() => loadConfig({ METRICS_PORT: '0' }), /METRICS_PORT/, 'a scraper needs a known port')
  t.throws(() => loadConfig({ METRICS_HOST: '' }), /METRICS_HOST/)
})

t.test('unknown variables are ignored, not passed through', async (t) => {
  t.notOk('PATH' in normalizeEnv({ PATH: '/bin', PORT: '1' }))
})

t.test('TRUST_PROXY forms', async (t) => {
  t.equal(trustProxyOption('false'), false)
  t.equal(trustProxyOption('true'), true)
  t.same(trustProxyOption('10.0.0.1, 127.0.0.1/8'), ['10.0.0.1', '127.0.0.1/8'])
  const hops = trustProxyOption('1')
  t.type(hops, 'function')
  if (typeof hops === 'function') {
    t.equal(hops('127.0.0.1', 0), true, 'nearest proxy trusted')
    t.equal(hops('127.0.0.1', 1), false, 'the one before it is not')
  }
})

t.test('CORS_ORIGIN forms', async (t) => {
  t.equal(allowedOrigins('*'), true)
  t.same(allowedOrigins('https://a.example, https://b.example'), ['https://a.example', 'https://b.example'])
})

t.test('the built server refuses to start on a bad value, naming it', async (t) => {
  t.ok(existsSync('dist/server.js'), 'dist/server.js exists (npm test builds first)')
  const res = spawnSync(process.execPath, ['dist/server.js'], {
    env: { PATH: process.env['PATH'], PORT: 'abc' },
    encoding: 'utf8',
    timeout: 20_000
  })
  t.not(res.status, 0, 'non-zero exit')
  t.match(res.stderr, /PORT/, 'message names PORT')
  t.notMatch(res.stderr, /at .*\.js:\d+/, 'no stack trace')
})
