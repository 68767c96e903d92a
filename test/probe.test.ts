import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer as createHttpServer, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { until } from './helper'
import { startServer, type ServerProcess } from './helpers/process'
import { freePort, startRedis, type TestRedis } from './helpers/redis'

/*
 * npm run probe (dist/cli/probe.js; npm run build first) against a healthy
 * fleet of two real server processes on one Redis (--url and --url2 on
 * different instances), against a URL where nothing listens, against a fleet
 * whose Redis is down, and against servers that never answer (the time
 * limits). Exit status and output, text and --json.
 */

const STEPS = ['create_room', 'connect_a', 'connect_b', 'join_a', 'join_b', 'offer', 'answer', 'ice_a_to_b', 'ice_b_to_a', 'resume', 'relay_after_resume', 'leave']

interface Run { status: number | null, stdout: string, stderr: string, ms: number }

/** Runs the built probe (asynchronously: the fake servers of some tests live in this process). */
function probe (...args: string[]): Promise<Run> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/cli/probe.js', ...args], { env: { PATH: process.env['PATH'] }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('close', (status) => {
      clearTimeout(timer)
      resolve({ status, stdout, stderr, ms: Date.now() - started })
    })
  })
}

interface Report { ok: boolean, url: string, url2: string, roomId: string, steps: Array<{ step: string, ok: boolean, ms: number, error?: string }>, total: number, failedStep: string | null, error: string | null }

function report (t: Test, run: Run): Report {
  t.equal(run.stdout.trim().split('\n').length, 1, '--json prints one line')
  return JSON.parse(run.stdout) as Report
}

async function fleet (t: Test, redis: TestRedis): Promise<[ServerProcess, ServerProcess]> {
  // The join limiter stays on; a few probes in a row from one address fit under this.
  const env = { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix, LOG_LEVEL: 'warn', JOIN_RATE_LIMIT_MAX: '20' }
  return [await startServer(t, { ...env, INSTANCE_ID: 'one' }), await startServer(t, { ...env, INSTANCE_ID: 'two' })]
}

async function counter (server: ServerProcess, series: string): Promise<number> {
  const text = await (await fetch(`${server.http}/metrics`)).text()
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? NaN : Number(line.slice(series.length + 1))
}

/** An HTTP server for the time limits: answers create_room, and holds every other request and every upgrade forever. */
async function stallingServer (t: Test, opts: { createRoom: boolean }): Promise<string> {
  const held = new Set<Socket>()
  const server: Server = createHttpServer((req, res) => {
    if (opts.createRoom && req.method === 'POST' && req.url === '/api/create_room') {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ success: true, message: 'created' }))
    }
    // Anything else: never answered.
  })
  server.on('connection', (socket) => { held.add(socket) })
  server.on('upgrade', () => { /* never completed */ })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of held) socket.destroy()
    server.close()
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return `http://127.0.0.1:${address.port}`
}

t.test('a healthy two-instance fleet passes every step, the second peer on the other instance and its session moved by the resume', async (t) => {
  const redis = await startRedis(t)
  const [one, two] = await fleet(t, redis)

  const text = await probe('--url', one.http, '--url2', two.http)
  t.equal(text.status, 0, text.stderr)
  t.equal(text.stderr, '')
  const lines = text.stdout.trim().split('\n')
  t.match(lines[0], new RegExp(`^probe ${one.http} and ${two.http}, room probe-[0-9a-f]{12}$`))
  t.same(lines.slice(1, -1).map(l => /^ {2}(ok|FAIL) +(\S+) +[\d.]+ ms$/.exec(l)?.slice(1)), STEPS.map(step => ['ok', step]), 'every step ok, in order, with its time')
  t.match(lines.at(-1), /^ok: 12 steps in [\d.]+ ms$/)
  t.equal(await counter(one, 'privydrop_sessions_moved_total{direction="in"}'), 1, 'the resume through --url moved the second peer\'s session to the first instance')
  t.equal(await counter(two, 'privydrop_sessions_moved_total{direction="out"}'), 1)

  const json = await probe('--url', one.http, '--url2', two.http, '--json')
  t.equal(json.status, 0, json.stderr)
  t.equal(json.stderr, '', '--json writes nothing else')
  const result = report(t, json)
  t.match(result, { ok: true, url: one.http, url2: two.http, failedStep: null, error: null })
  t.same(result.steps.map(s => s.step), STEPS)
  t.ok(result.steps.every(s => s.ok && typeof s.ms === 'number' && s.ms >= 0 && s.error === undefined), 'each step: ok and its ms')
  t.ok(result.total >= result.steps.reduce((sum, s) => sum + s.ms, 0) - 1, 'total covers the steps')

  // --url2 defaults to --url.
  const single = report(t, await probe('--url', two.http, '--json'))
  t.match(single, { ok: true, url: two.http, url2: two.http })
})

t.test('nothing listening: exit 1 at create_room, saying why', async (t) => {
  const url = `http://127.0.0.1:${await freePort()}`
  const text = await probe('--url', url)
  t.equal(text.status, 1)
  t.match(text.stdout, /^ {2}FAIL {2}create_room +[\d.]+ ms {2}cannot reach .*ECONNREFUSED/m)
  t.match(text.stdout, /^FAILED at create_room after [\d.]+ ms$/m)
  t.match(text.stderr, /^probe: create_room failed: cannot reach http:\/\/127\.0\.0\.1:\d+\/api\/create_room: connect ECONNREFUSED/)

  const json = await probe('--url', url, '--json')
  t.equal(json.status, 1)
  t.equal(json.stderr, '')
  const result = report(t, json)
  t.match(result, { ok: false, failedStep: 'create_room', error: /^create_room: cannot reach .*ECONNREFUSED/ })
  t.same(result.steps.map(s => [s.step, s.ok]), [['create_room', false]], 'no step runs after the failure')
})

t.test('a fleet whose Redis is down: exit 1 at create_room with the 503', async (t) => {
  const redis = await startRedis(t, { own: true })
  const [one, two] = await fleet(t, redis)
  await redis.stop()
  t.ok(await until(async () => (await fetch(`${one.http}/ready`)).status === 503, 10_000), 'the instance reports it')

  const text = await probe('--url', one.http, '--url2', two.http)
  t.equal(text.status, 1)
  t.match(text.stdout, /^ {2}FAIL {2}create_room +[\d.]+ ms {2}POST http:\/\/127\.0\.0\.1:\d+\/api\/create_room answered HTTP 503/m)
  t.match(text.stderr, /^probe: create_room failed: POST \S+ answered HTTP 503/)

  const result = report(t, await probe('--url', one.http, '--url2', two.http, '--json'))
  t.match(result, { ok: false, failedStep: 'create_room', error: /HTTP 503/ })
})

t.test('time limits: a step that runs over its own limit, or over the total, fails by name', async (t) => {
  const silent = await stallingServer(t, { createRoom: false })
  const perStep = await probe('--url', silent, '--timeout-ms', '300', '--json')
  t.equal(perStep.status, 1)
  t.match(report(t, perStep), { ok: false, failedStep: 'create_room', error: 'create_room: ran over its time limit of 300 ms' })
  t.ok(perStep.ms < 5000, `gave up in time (${perStep.ms} ms)`)

  const total = await probe('--url', silent, '--timeout-ms', '5000', '--total-timeout-ms', '250')
  t.equal(total.status, 1)
  t.match(total.stderr, /^probe: create_room failed: ran over the total time limit of 250 ms$/m)

  // REST answers, the WebSocket upgrade never does: the step named is the connect.
  const noUpgrade = await stallingServer(t, { createRoom: true })
  const ws = report(t, await probe('--url', noUpgrade, '--timeout-ms', '400', '--json'))
  t.match(ws, { ok: false, failedStep: 'connect_a', error: /^connect_a: / })
  t.same(ws.steps.map(s => [s.step, s.ok]), [['create_room', true], ['connect_a', false]])
})

t.test('bad arguments: exit 2 with the usage', async (t) => {
  const none = await probe()
  t.equal(none.status, 2)
  t.match(none.stderr, /--url is required[^]*Usage: npm run probe/)
  const ftp = await probe('--url', 'ftp://example.com')
  t.equal(ftp.status, 2)
  t.match(ftp.stderr, /--url must be an http:\/\/ or https:\/\/ URL/)
  const limit = await probe('--url', 'http://127.0.0.1:1', '--timeout-ms', '0')
  t.equal(limit.status, 2)
  const help = await probe('--help')
  t.equal(help.status, 0)
  t.match(help.stdout, /Steps: create_room, connect_a, .*, leave\./)
})
