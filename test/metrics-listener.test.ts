import t from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { Registry } from 'prom-client'
import { buildTestApp } from './helper'
import { freePort } from './helpers/redis'
import { outputBefore, startServer, waitForOutput } from './helpers/process'
import { until } from './helper'

/*
 * /metrics reveals process, runtime and load details: in production it leaves
 * the public port and is served, if at all, by a listener of its own
 * (METRICS_HOST:METRICS_PORT). Real server processes, as deployed.
 */

const PROMETHEUS_TYPE = new Registry().contentType

/** TCP ports a process is listening on, from its socket fds and /proc/net/tcp{,6} (Linux). */
function listeningPorts (pid: number): number[] {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m?.[1] !== undefined) inodes.add(m[1])
    } catch {}
  }
  const ports = new Set<number>()
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try { text = readFileSync(table, 'utf8') } catch { continue }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st … inode; st 0A is LISTEN.
      const cols = line.trim().split(/\s+/)
      const port = cols[1]?.split(':')[1]
      if (cols[3] === '0A' && inodes.has(cols[9] ?? '') && port !== undefined) ports.add(parseInt(port, 16))
    }
  }
  return [...ports].sort((a, b) => a - b)
}

const scrape = async (url: string) => {
  const res = await fetch(url)
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() }
}

t.test('in production /metrics is a 404 on the public port and served only by the METRICS_PORT listener', async (t) => {
  const metricsPort = await freePort()
  const server = await startServer(t, { NODE_ENV: 'production', METRICS_PORT: String(metricsPort) })
  const metrics = `http://127.0.0.1:${metricsPort}`

  const publicScrape = await scrape(`${server.http}/metrics`)
  t.equal(publicScrape.status, 404, 'not on the main port')
  t.match(JSON.parse(publicScrape.body), { statusCode: 404, error: 'Not Found' }, 'the 404 of any unknown route')

  await fetch(`${server.http}/api/get_room`)
  // Counted in onResponse, which the server may run after the client has the
  // response: scraped until it shows (or a few seconds have passed).
  const counted = /^privydrop_http_requests_total\{method="GET",route="\/api\/get_room",status_code="200"\} 1$/m
  let scraped = await scrape(`${metrics}/metrics`)
  await until(async () => counted.test((scraped = await scrape(`${metrics}/metrics`)).body))
  t.equal(scraped.status, 200)
  t.equal(scraped.type, PROMETHEUS_TYPE, 'Prometheus text content type')
  t.match(scraped.body, /^process_cpu_user_seconds_total \d/m, 'process metrics')
  t.match(scraped.body, counted, 'the app\'s own registry: it counted the main port\'s request')

  for (const path of ['/health', '/ready', '/api/get_room', '/openapi.json', '/ws', '/metrics/', '/']) {
    t.equal((await fetch(`${metrics}${path}`)).status, 404, `${path} is not served on the metrics port`)
  }
  t.equal((await fetch(`${metrics}/metrics`, { method: 'POST' })).status, 404, 'GET only')
  t.equal((await fetch(`${server.http}/ready`)).status, 200, 'the app itself is unaffected')
  t.same(listeningPorts(server.child.pid ?? 0), [server.port, metricsPort].sort((a, b) => a - b), 'the main port and the metrics port, nothing else')
  t.ok(await waitForOutput(server, /"listener":"metrics".*Server listening at http:\/\/127\.0\.0\.1:\d+/), 'the metrics listener logs its address')
})

t.test('in production without METRICS_PORT nothing serves /metrics, and start-up says so', async (t) => {
  const server = await startServer(t, { NODE_ENV: 'production' })
  t.equal((await fetch(`${server.http}/metrics`)).status, 404)
  t.same(listeningPorts(server.child.pid ?? 0), [server.port], 'no listener but the main port')
  t.ok(await waitForOutput(server, /"level":30,.*no metrics listener/), 'an info line at start-up')
})

t.test('in production METRICS_ON_MAIN_PORT=true brings the public route back', async (t) => {
  const server = await startServer(t, { NODE_ENV: 'production', METRICS_ON_MAIN_PORT: 'true' })
  t.equal((await fetch(`${server.http}/metrics`)).status, 200)
  t.notMatch(await outputBefore(server), /no metrics listener/)
})

t.test('outside production /metrics stays on the main port', async (t) => {
  const server = await startServer(t, { NODE_ENV: 'development' })
  const scraped = await scrape(`${server.http}/metrics`)
  t.equal(scraped.status, 200)
  t.equal(scraped.type, PROMETHEUS_TYPE)
  t.match(scraped.body, /^process_cpu_user_seconds_total \d/m)
  t.same(listeningPorts(server.child.pid ?? 0), [server.port], 'no separate listener unless METRICS_PORT is set')
  t.notMatch(await outputBefore(server), /no metrics listener/)
})

t.test('outside production METRICS_PORT serves /metrics there as well, to try the production set-up', async (t) => {
  const metricsPort = await freePort()
  const server = await startServer(t, { NODE_ENV: 'development', METRICS_PORT: String(metricsPort) })
  t.equal((await fetch(`${server.http}/metrics`)).status, 200, 'main port')
  const scraped = await scrape(`http://127.0.0.1:${metricsPort}/metrics`)
  t.equal(scraped.status, 200, 'metrics port')
  t.equal(scraped.type, PROMETHEUS_TYPE)
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/health`)).status, 404)
})

t.test('SIGTERM shuts down cleanly with the metrics listener open', async (t) => {
  const metricsPort = await freePort()
  const server = await startServer(t, { NODE_ENV: 'production', METRICS_PORT: String(metricsPort) })
  // A kept-alive scrape connection must not hold the shutdown up.
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200)
  const started = Date.now()
  server.child.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null }, 'exit 0')
  t.ok(Date.now() - started < 5000, 'well within SHUTDOWN_TIMEOUT_MS')
  await t.rejects(fetch(`http://127.0.0.1:${metricsPort}/metrics`), 'nothing listens on the metrics port any more')
})

t.test('a METRICS_PORT that cannot be bound stops start-up with a message naming it', async (t) => {
  const taken = createServer()
  await new Promise<void>(resolve => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise(resolve => taken.close(resolve)))
  const address = taken.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  const port = await freePort()
  const child = spawn(process.execPath, ['dist/server.js'], {
    env: { PATH: process.env['PATH'], NODE_ENV: 'production', HOST: '127.0.0.1', PORT: String(port), METRICS_PORT: String(address.port) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  // A server that ignored the taken port would run on: give up after a while instead of hanging.
  // 'close', not 'exit': only once its pipes have closed is all it wrote in `out`.
  const code = await new Promise<number | null | 'running'>(resolve => {
    const timer = setTimeout(resolve, 20_000, 'running')
    child.once('close', (exitCode) => { clearTimeout(timer); resolve(exitCode) })
  })
  t.not(code, 'running', 'start-up stopped')
  t.not(code, 0, 'non-zero exit')
  t.match(out, /"level":60,.*metrics listener could not listen on 127\.0\.0\.1:\d+ \(METRICS_HOST, METRICS_PORT\): .*EADDRINUSE/, 'fatal line names the variables and the cause')
  await t.rejects(fetch(`http://127.0.0.1:${port}/health`), 'the main port never opened')
})

t.test('with buildApp: the listener opens on ready and closes with the app', async (t) => {
  const metricsPort = await freePort()
  const app = await buildTestApp(t, { NODE_ENV: 'production', METRICS_PORT: String(metricsPort) })
  t.equal((await app.inject('/metrics')).statusCode, 404, 'no route on the app itself')
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200, 'listening without app.listen()')
  await app.close()
  await t.rejects(fetch(`http://127.0.0.1:${metricsPort}/metrics`), 'closed by app.close()')
})

t.test('METRICS_PORT equal to PORT is refused at start-up', async (t) => {
  await t.rejects(buildTestApp(t, { PORT: '4567', METRICS_PORT: '4567' }), /METRICS_PORT must differ from PORT/)
})
