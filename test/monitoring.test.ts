import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse } from 'yaml'
import { until } from './helper'
import { createRoom, OFFER, startServer, type ServerProcess } from './helpers/process'
import { freePort, startRedis } from './helpers/redis'
import { connect, join as joinRoom, refusedWith, TestClient } from './helpers/ws'
import { dashboardQueries, exposedNames, fillVariables, metricNames, type Dashboard } from './helpers/promql'

/*
 * deploy/grafana (dashboard and provisioning) and deploy/prometheus (scrape
 * config, alert rules and their unit tests) against the server they watch:
 *   - promtool checks the rules and the config and runs alerts.test.yml;
 *   - every metric the dashboard and the rules read is in /metrics of a real
 *     fleet (two server processes on one Redis) that carried traffic: a
 *     join, relays each way, a refusal, a refused upgrade, a heartbeat
 *     termination and a resume that moved a session between instances;
 *   - a real Prometheus, started from deploy/prometheus/prometheus.yml
 *     (targets pointed at those processes), evaluates every dashboard query
 *     and every rule, and the Redis alerts go pending when Redis stops.
 * Grafana itself cannot be installed here (no Debian package); the
 * dashboard's JSON and its provisioning are checked against the compose file.
 * promtool and prometheus come from Debian's `prometheus` package (.ci/run
 * installs it): without them these tests fail, they are never skipped.
 */

const DASHBOARD = 'deploy/grafana/dashboards/privydrop-signaling.json'
const ALERTS = 'deploy/prometheus/alerts.yml'
const ALERT_TESTS = 'deploy/prometheus/alerts.test.yml'
const SCRAPE_CONFIG = 'deploy/prometheus/prometheus.yml'

/** Grafana's reference to the dashboard's data-source variable (its syntax, not a template string). */
const GRAFANA_DATASOURCE = '${datasource}' // eslint-disable-line no-template-curly-in-string

/** Metrics Prometheus makes itself rather than scrapes. */
const SYNTHETIC = new Set(['up'])

function requireTool (name: string): void {
  const probe = spawnSync(name, ['--version'], { encoding: 'utf8' })
  if (probe.error !== undefined) throw new Error(`${name} is not installed: apt-get install prometheus (Debian's package has promtool and prometheus; .ci/run installs it)`)
}

function promtool (...args: string[]): { status: number | null, output: string } {
  requireTool('promtool')
  const run = spawnSync('promtool', args, { encoding: 'utf8', timeout: 60_000 })
  return { status: run.status, output: `${run.stdout}${run.stderr}` }
}

interface Rule { alert: string, expr: string, for?: string }
const readRules = (): Rule[] => (parse(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap(g => g.rules)
const readDashboard = (): Dashboard & Record<string, any> => JSON.parse(readFileSync(DASHBOARD, 'utf8'))

/** Every PromQL expression the dashboard and the rules run, with where it comes from. */
function allQueries (): Array<{ where: string, expr: string }> {
  return [...dashboardQueries(readDashboard()), ...readRules().map(r => ({ where: `alert ${r.alert}`, expr: r.expr }))]
}

t.test('metric names are read out of PromQL: not functions, keywords, labels, strings or durations', async (t) => {
  t.same(metricNames('sum by (instance, path) (rate(privydrop_relay_latency_seconds_count{job="$job",instance=~"$instance"}[$__rate_interval]))'), ['privydrop_relay_latency_seconds_count'])
  t.same(metricNames('histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 0.05'), ['a_bucket'])
  t.same(metricNames('process_open_fds{job="x"} / process_max_fds{job="x"} > 0.8'), ['process_open_fds', 'process_max_fds'])
  t.same(metricNames('(x / on (instance) group_left (code) y) > 1e3 and z offset 5m unless bool w'), ['x', 'y', 'z', 'w'])
  t.same(metricNames('up == 0'), ['up'])
  t.same(metricNames('sum(rate(c_total{code=~"a|b"}[10m])) > 0.1 and sum(rate(d[1m])) > Inf'), ['c_total', 'd'])
})

t.test('promtool: the rules and the scrape config are valid, and every alert has unit tests that make it fire', async (t) => {
  const rules = promtool('check', 'rules', ALERTS)
  t.equal(rules.status, 0, rules.output)
  t.match(rules.output, /SUCCESS: \d+ rules found/)
  const config = promtool('check', 'config', SCRAPE_CONFIG)
  t.equal(config.status, 0, config.output)
  const tests = promtool('test', 'rules', ALERT_TESTS)
  t.equal(tests.status, 0, tests.output)
  t.match(tests.output, /SUCCESS/)

  // "Each alert is tested": it fires for someone in some test, and some evaluation expects it silent.
  const cases = (parse(readFileSync(ALERT_TESTS, 'utf8')) as { tests: Array<{ alert_rule_test: Array<{ alertname: string, exp_alerts: unknown[] }> }> })
    .tests.flatMap(test => test.alert_rule_test)
  for (const { alert } of readRules()) {
    t.ok(cases.some(c => c.alertname === alert && c.exp_alerts.length > 0), `${alert} fires in a unit test`)
    t.ok(cases.some(c => c.alertname === alert && c.exp_alerts.length === 0), `${alert} is silent in a unit test (before its for, or for a healthy instance)`)
  }
  const required = ['PrivydropNotReady', 'PrivydropRedisUnreachable', 'PrivydropRelayErrorsHigh', 'PrivydropRelayRefusalsHigh', 'PrivydropRelayLatencyHigh', 'PrivydropNearConnectionLimit', 'PrivydropEventLoopDelayHigh']
  t.same(required.filter(name => !readRules().some(r => r.alert === name)), [], 'the alerts the runbook names exist')
})

t.test('the dashboard: every topic has a panel, one data source variable, a sound layout, provisioned from the files the compose file mounts', async (t) => {
  const dashboard = readDashboard()
  t.equal(dashboard['uid'], 'privydrop-signaling')
  const panels = dashboard.panels as Array<Record<string, any>>
  const ids = panels.map(p => p['id'])
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  const variables = (dashboard.templating?.list ?? []).map(v => v.name)
  t.same(variables, ['datasource', 'job', 'instance'])

  const grid: Array<{ x: number, y: number, w: number, h: number, title: string }> = []
  for (const panel of panels) {
    const { x, y, w, h } = panel['gridPos']
    t.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `${panel['title']}: within the 24 columns`)
    for (const other of grid) {
      const overlaps = x < other.x + other.w && other.x < x + w && y < other.y + other.h && other.y < y + h
      if (overlaps) t.fail(`${panel['title']} overlaps ${other.title}`)
    }
    grid.push({ x, y, w, h, title: panel['title'] })
    if (panel['type'] === 'row') continue
    t.same(panel['datasource'], { type: 'prometheus', uid: GRAFANA_DATASOURCE }, `${panel['title']}: the data source variable`)
    const refIds = (panel['targets'] as Array<{ refId: string, expr: string, datasource: unknown }>).map(q => q.refId)
    t.ok(refIds.length > 0 && new Set(refIds).size === refIds.length, `${panel['title']}: queries with distinct refIds`)
    for (const q of panel['targets']) {
      t.match(q.expr, /job="\$job",instance=~"\$instance"/, `${panel['title']} ${q.refId}: follows the job and instance variables`)
      for (const name of q.expr.matchAll(/\$(\w+)/g)) t.ok(name[1] === '__rate_interval' || variables.includes(name[1]), `${panel['title']}: $${name[1]} is defined`)
    }
  }

  // What the issue asks to see, by the metrics that show it.
  const read = new Set(dashboardQueries(dashboard).flatMap(q => metricNames(q.expr)))
  for (const [topic, metric] of [
    ['connections', 'privydrop_ws_connections'], ['held sessions', 'privydrop_ws_sessions_held'], ['rooms', 'privydrop_rooms_active'],
    ['relay rate, local and remote', 'privydrop_relay_latency_seconds_count'], ['relay latency', 'privydrop_relay_latency_seconds_bucket'],
    ['errors by code', 'privydrop_ws_errors_total'], ['refusals by status', 'privydrop_http_requests_total'],
    ['resumes', 'privydrop_ws_resumes_total'], ['moves', 'privydrop_sessions_moved_total'], ['heartbeat terminations', 'privydrop_ws_closes_total'],
    ['Redis link', 'privydrop_redis_up'], ['readiness', 'privydrop_ready'], ['event-loop delay', 'nodejs_eventloop_lag_p99_seconds'],
    ['memory', 'process_resident_memory_bytes'], ['file descriptors', 'process_open_fds']
  ]) t.ok(read.has(metric as string), `a panel shows ${topic} (${metric})`)
  t.ok(dashboardQueries(dashboard).some(q => /reason="heartbeat"/.test(q.expr)), 'heartbeat terminations have a panel of their own')

  // Provisioning, as docker-compose.yml mounts it.
  const compose = parse(readFileSync('deploy/docker-compose.yml', 'utf8'), { merge: true }) as any
  const mountOf = (service: string, source: string): string => {
    const volume = (compose.services[service].volumes as string[]).find(v => v.split(':')[0] === source)
    if (volume === undefined) throw new Error(`${service} does not mount ${source}`)
    return volume.split(':')[1] as string
  }
  const grafana = compose.services['grafana']
  t.equal(mountOf('grafana', './grafana/provisioning'), '/etc/grafana/provisioning')
  const datasources = parse(readFileSync('deploy/grafana/provisioning/datasources/prometheus.yml', 'utf8')).datasources
  t.equal(datasources.length, 1)
  t.match(datasources[0], { type: 'prometheus', isDefault: true })
  const [, promHost, promPort] = /^http:\/\/([\w-]+):(\d+)$/.exec(datasources[0].url) ?? []
  t.ok(compose.services[promHost ?? ''], `the data source names the compose service ${promHost}`)
  t.ok((compose.services['prometheus'].ports as string[]).some(p => p.endsWith(`:${promPort}`)), 'on the port Prometheus listens on')
  const providers = parse(readFileSync('deploy/grafana/provisioning/dashboards/privydrop.yml', 'utf8')).providers
  t.equal(providers[0].type, 'file')
  t.equal(providers[0].options.path, mountOf('grafana', './grafana/dashboards'), 'the provider reads where the dashboards are mounted')
  const home = grafana.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH as string
  t.ok(home.startsWith(providers[0].options.path + '/') && existsSync(join('deploy/grafana/dashboards', home.slice(providers[0].options.path.length + 1))), 'the home dashboard is the provisioned file')

  // Prometheus, as mounted: its config file, and one target per instance on its METRICS_PORT.
  const promConfigDir = mountOf('prometheus', './prometheus')
  t.ok((compose.services['prometheus'].command as string[]).includes(`--config.file=${promConfigDir}/prometheus.yml`), 'Prometheus runs deploy/prometheus/prometheus.yml')
  const scrape = parse(readFileSync(SCRAPE_CONFIG, 'utf8'))
  const targets = (scrape.scrape_configs[0].static_configs as Array<{ targets: string[] }>).flatMap(c => c.targets).sort()
  const instances = Object.keys(compose.services).filter(name => compose.services[name].environment?.METRICS_PORT !== undefined)
  t.same(targets, instances.map(name => `${name}:${compose.services[name].environment.METRICS_PORT}`).sort(), 'every instance is scraped on its METRICS_PORT')
  t.equal(scrape.scrape_configs[0].job_name, 'privydrop', 'the job the alerts filter on')
})

/** A real Prometheus from deploy/prometheus/prometheus.yml, its targets replaced by `targets`, scraping every second. */
async function startPrometheus (t: Test, targets: string[]): Promise<{ query: (expr: string) => Promise<any[]>, api: (path: string) => Promise<any> }> {
  requireTool('prometheus')
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-prometheus-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const config = parse(readFileSync(SCRAPE_CONFIG, 'utf8'))
  config.global = { scrape_interval: '1s', evaluation_interval: '1s' }
  config.rule_files = [resolve(ALERTS)]
  config.scrape_configs[0].static_configs = [{ targets }]
  writeFileSync(join(dir, 'prometheus.yml'), JSON.stringify(config))
  const port = await freePort()
  const child = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr.on('data', (d: Buffer) => { log += d.toString() })
  t.teardown(() => { child.kill('SIGKILL') })
  const base = `http://127.0.0.1:${port}`
  const ready = await until(async () => (await fetch(`${base}/-/ready`).catch(() => null))?.ok === true, 15_000, 100)
  if (!ready) throw new Error(`prometheus did not start: ${log}`)
  const api = async (path: string): Promise<any> => {
    const body = await (await fetch(`${base}${path}`)).json() as { status: string, data: any, error?: string }
    if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? body.status}`)
    return body.data
  }
  return { api, query: async (expr) => (await api(`/api/v1/query?query=${encodeURIComponent(expr)}`)).result }
}

async function scrape (url: string): Promise<string> {
  const res = await fetch(url)
  if (!res.ok) throw new Error(`${url}: ${res.status}`)
  return await res.text()
}

function sample (text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? NaN : Number(line.slice(series.length + 1))
}

t.test('a fleet that carried traffic exports every metric the dashboard and the alerts read; Prometheus evaluates all of them, and the Redis alerts go pending when Redis stops', async (t) => {
  const redis = await startRedis(t, { own: true })
  // Each instance's metrics listener on its own loopback address, so the
  // scrape config's relabelling (instance = host) tells them apart.
  const fleet: Array<{ server: ServerProcess, metrics: string, target: string }> = []
  for (const host of ['127.0.0.2', '127.0.0.3']) {
    const metricsPort = await freePort()
    const server = await startServer(t, {
      REDIS_URL: redis.url,
      KEY_PREFIX: redis.prefix,
      LOG_LEVEL: 'warn',
      NODE_ENV: 'production',
      METRICS_HOST: host,
      METRICS_PORT: String(metricsPort),
      CORS_ORIGIN: 'https://app.example',
      HEARTBEAT_MS: '1000',
      DISABLE_JOIN_RATE_LIMIT: 'true'
    })
    fleet.push({ server, metrics: `http://${host}:${metricsPort}/metrics`, target: `${host}:${metricsPort}` })
  }
  const [one, two] = fleet as [typeof fleet[number], typeof fleet[number]]
  const prometheus = await startPrometheus(t, fleet.map(f => f.target))
  // Its first scrape comes a few seconds after start: the traffic below must fall inside what it sees.
  t.ok(await until(async () => (await prometheus.query('up{job="privydrop"} == 1')).length === 2, 20_000, 250), 'Prometheus scrapes both instances')

  // Traffic: a room across the two instances, a handshake, a refusal, a refused upgrade.
  const roomId = `mon-${randomBytes(4).toString('hex')}`
  await createRoom(one.server, roomId)
  const a = await connect(t, one.server.ws)
  const b = await connect(t, two.server.ws)
  await joinRoom(a, roomId)
  await joinRoom(b, roomId)
  await a.next('ready')
  a.send('offer', { peerId: b.peerId, offer: OFFER })
  await b.next('offer')
  b.send('answer', { peerId: a.peerId, answer: { type: 'answer', sdp: 'v=0\r\n' } })
  await a.next('answer')
  a.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: 'candidate:1 1 udp 1 192.0.2.1 9 typ host', sdpMid: '0' } })
  await b.next('ice-candidate')
  b.send('ice-candidate', { peerId: a.peerId, candidate: null })
  await a.next('ice-candidate')
  a.send('offer', { peerId: 'nobody-here', offer: OFFER }, 'bogus')
  t.equal((await a.next('error')).data.code, 'peer_not_found')
  t.equal(await refusedWith(new TestClient(one.server.ws, { origin: 'https://elsewhere.example' })), 403, 'an upgrade from a foreign origin is refused')
  // A client that never answers pings: terminated after two missed pongs.
  const silent = new TestClient(one.server.ws, { autoPong: false })
  t.teardown(() => silent.ws.terminate())
  await silent.opened
  // b's network drops; it resumes on the other instance (its session moves there) and a relay reaches it.
  const token = b.token
  b.drop()
  t.ok(await until(async () => sample(await scrape(two.metrics), 'privydrop_ws_sessions_held') === 1), 'b is held for resume on its instance')
  const resumed = await connect(t, `${one.server.ws}?resume=${encodeURIComponent(token)}`)
  t.equal(resumed.peerId, b.peerId, 'same peer after the resume')
  a.send('ice-candidate', { peerId: b.peerId, candidate: null })
  await resumed.next('ice-candidate')
  t.same(await silent.closed.then(c => c.code), 1006, 'the silent client was terminated')

  const first = await scrape(one.metrics)
  const second = await scrape(two.metrics)
  t.equal(sample(first, 'privydrop_sessions_moved_total{direction="in"}'), 1, 'moved in where it resumed')
  t.equal(sample(second, 'privydrop_sessions_moved_total{direction="out"}'), 1, 'moved out where it was')
  t.equal(sample(first, 'privydrop_ws_resumes_total'), 1)
  t.equal(sample(first, 'privydrop_ws_closes_total{reason="heartbeat"}'), 1, 'the heartbeat termination is counted')
  t.ok(sample(second, 'privydrop_ws_closes_total{reason="dropped"}') >= 1, 'the drop is counted')
  t.equal(sample(first, 'privydrop_http_requests_total{method="GET",route="/ws",status_code="403"}'), 1, 'the refused upgrade is counted')
  for (const text of [first, second]) {
    t.equal(sample(text, 'privydrop_ready'), 1)
    t.equal(sample(text, 'privydrop_redis_up{connection="commands"}'), 1)
    t.equal(sample(text, 'privydrop_redis_up{connection="subscriber"}'), 1)
  }

  // (a) Every metric read anywhere is exported (Prometheus's own `up` aside).
  const exposed = exposedNames(first)
  const missing = new Map<string, string[]>()
  for (const { where, expr } of allQueries()) {
    for (const name of metricNames(expr)) {
      if (SYNTHETIC.has(name) || exposed.has(name)) continue
      missing.set(name, [...(missing.get(name) ?? []), where])
    }
  }
  t.same(Object.fromEntries(missing), {}, 'no query reads a metric the server does not export')
  t.ok(allQueries().length > 30, `${allQueries().length} queries checked`)

  // (b) A real Prometheus scrapes both instances and evaluates every dashboard query and every rule.
  // A series is born with its first relay, and rate() needs it to grow after
  // Prometheus first saw it: relay again once it has.
  t.ok(await until(async () => (await prometheus.query('privydrop_relay_latency_seconds_count')).length === 3, 15_000, 250), 'Prometheus scraped the relay counts (local and remote)')
  for (let i = 0; i < 5; i++) {
    a.send('ice-candidate', { peerId: b.peerId, candidate: null })
    await resumed.next('ice-candidate')
    resumed.send('ice-candidate', { peerId: a.peerId, candidate: null })
    await a.next('ice-candidate')
  }
  t.ok(await until(async () => (await prometheus.query('sum(rate(privydrop_relay_latency_seconds_count[1m])) > 0')).length === 1, 15_000, 250), 'Prometheus sees relays per second')
  t.same((await prometheus.query('up{job="privydrop"}')).map((r: any) => r.metric.instance).sort(), ['127.0.0.2', '127.0.0.3'], 'instance is the host, as relabelled')
  const values = { datasource: 'prometheus', job: 'privydrop', instance: '.*' }
  for (const { where, expr } of dashboardQueries(readDashboard())) {
    const result = await prometheus.query(fillVariables(expr, values))
    t.ok(result.length > 0, `${where}: ${result.length} series`)
  }
  t.same((await prometheus.query('sum(privydrop_ready)'))[0]?.value[1], '2', 'both instances ready')
  let rules: Array<{ name: string, health: string, lastError?: string, state: string }> = []
  t.ok(await until(async () => {
    rules = (await prometheus.api('/api/v1/rules')).groups.flatMap((g: any) => g.rules)
    return rules.length > 0 && rules.every(r => r.health !== 'unknown')
  }, 10_000, 250), 'every rule was evaluated')
  t.same(rules.filter(r => r.health !== 'ok').map(r => `${r.name}: ${r.lastError}`), [], 'every rule evaluates without error')
  t.same(rules.map(r => r.name).sort(), readRules().map(r => r.alert).sort(), 'Prometheus loaded every rule of alerts.yml')
  const active = async (name: string): Promise<Array<{ instance: string, state: string, connection?: string }>> =>
    (await prometheus.api('/api/v1/alerts')).alerts.filter((a: any) => a.labels.alertname === name).map((a: any) => ({ instance: a.labels.instance, state: a.state, ...(a.labels.connection !== undefined && { connection: a.labels.connection }) }))
  t.same(await active('PrivydropRedisUnreachable'), [], 'no Redis alert while Redis runs')
  t.same(await active('PrivydropNotReady'), [], 'no readiness alert while Redis runs')

  // Redis stops: both instances report it, and the alerts wait out their `for`.
  await redis.stop()
  t.ok(await until(async () => {
    const unreachable = await active('PrivydropRedisUnreachable')
    return ['127.0.0.2', '127.0.0.3'].every(i => unreachable.some(a => a.instance === i && a.connection === 'commands' && a.state === 'pending'))
  }, 20_000, 250), 'PrivydropRedisUnreachable is pending for both instances (commands)')
  t.ok(await until(async () => (await active('PrivydropNotReady')).filter(a => a.state === 'pending').length === 2, 20_000, 250), 'PrivydropNotReady is pending for both')
  t.equal(sample(await scrape(one.metrics), 'privydrop_ready'), 0, 'the gauge says what /ready says')
  t.equal((await fetch(`${one.server.http}/ready`)).status, 503)
})
