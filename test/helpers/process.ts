import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { join as joinPath } from 'node:path'
import type { Test } from 'tap'
import { freePort } from './redis'
import { connect, join, type TestClient } from './ws'

type Teardown = { teardown: (fn: () => unknown) => void }

export interface ServerProcess {
  child: ChildProcess
  port: number
  http: string
  ws: string
  /**
   * What the process wrote to stdout and stderr so far, as far as this process
   * has read it. It arrives through pipes, not with the server's HTTP or
   * WebSocket answers: a line logged before an answer was sent may not have
   * been read yet when the answer is. Read it through waitForOutput (a line
   * that must be there), outputBefore (counts and absences while it runs) or
   * after `closed` (everything).
   */
  output: () => string
  /** Settles when the process exits; its last output may still be in the pipes. */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Settles once the process has exited and its stdout and stderr are closed: output() is then complete. */
  closed: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/**
 * Set when the tests run under c8 (npm test): every server writes its V8
 * coverage there when it exits, which Node does on any normal exit or
 * process.exit (all of the server's exits, SIGTERM included via
 * close-with-grace), never when it is killed by SIGKILL. While it is set,
 * Node also records the source map of dist/server.js, so c8 maps the
 * bundle back to src/.
 */
const coverageDir = process.env['NODE_V8_COVERAGE']

/** TEST_SERVER_LOGS=<dir>: every server's whole output is written there when its test ends (to look into a failure). */
const logDir = process.env['TEST_SERVER_LOGS']

/**
 * Starts `node dist/server.js` as a real process on a free port and waits
 * until it is ready. `script` runs another build instead (the upgrade test's
 * previous release).
 */
export async function startServer (t: Teardown, env: Record<string, string> = {}, { script = 'dist/server.js' }: { script?: string } = {}): Promise<ServerProcess> {
  if (!existsSync(script)) throw new Error(`${script} missing: run npm run build (npm test does)`)
  const port = await freePort()
  const child = spawn(process.execPath, [script], {
    env: { PATH: process.env['PATH'], HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', ...(coverageDir !== undefined && { NODE_V8_COVERAGE: coverageDir }), ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  // As text: a character split across two chunks is joined, not mangled.
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { out += d })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
  const closed = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => child.once('close', (code, signal) => resolve({ code, signal })))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      if (coverageDir === undefined) child.kill('SIGKILL')
      else await stopWritingCoverage(child, exited)
    }
    if (logDir !== undefined) {
      await closed
      writeFileSync(joinPath(logDir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${env['INSTANCE_ID'] ?? 'server'}-${port}.log`), out)
    }
  })

  const http = `http://127.0.0.1:${port}`
  const started = Date.now()
  let last = 'no answer'
  while (Date.now() - started < START_TIMEOUT_MS) {
    if (child.exitCode !== null) {
      await closed
      throw new Error(`server exited early (${child.exitCode}): ${out}`)
    }
    try {
      const res = await fetch(`${http}/ready`)
      if (res.ok) return { child, port, http, ws: `ws://127.0.0.1:${port}/ws`, output: () => out, exited, closed }
      last = `${res.status} ${await res.text()}`
    } catch (err) {
      last = String((err as Error).cause ?? err)
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`server did not become ready within ${START_TIMEOUT_MS} ms (last /ready: ${last}); its output: ${out}`)
}

/**
 * How long a server may take to become ready: a bound for a start-up that
 * hangs, not a speed requirement. A couple of seconds on a quiet machine; on
 * a loaded one (load average about 10 on 2 cores), with coverage on and three
 * servers starting at once, more than 15 s was seen.
 */
const START_TIMEOUT_MS = 60_000

/**
 * Under coverage a server still running at teardown is stopped with SIGTERM
 * instead of SIGKILL, so that it writes its coverage. The first SIGTERM starts
 * close-with-grace; the second, 100 ms later (not at once: two signals sent
 * back to back can merge into one), makes it exit at once (process.exit(1))
 * instead of waiting out the graceful drain. SIGKILL only if even that fails.
 */
async function stopWritingCoverage (child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  const exitedWithin = (ms: number): Promise<boolean> => new Promise(resolve => {
    const timer = setTimeout(resolve, ms, false)
    exited.then(() => { clearTimeout(timer); resolve(true) }, () => {})
  })
  child.kill('SIGTERM')
  if (await exitedWithin(100)) return
  child.kill('SIGTERM')
  if (await exitedWithin(5000)) return
  child.kill('SIGKILL')
}

type Output = Pick<ServerProcess, 'output' | 'closed'>

/**
 * Waits until a process's output, from offset `from` on, matches `pattern`
 * (a string is matched literally) and returns the match, its index counted
 * from the start of the whole output. For a line the test expects: output()
 * read at once may not hold it yet (see ServerProcess.output). Rejects after
 * `timeoutMs`, or as soon as the process's output has ended without a match,
 * with the output seen so far.
 */
export async function waitForOutput (server: Output, pattern: RegExp | string, timeoutMs = 15_000, from = 0): Promise<RegExpExecArray> {
  const regexp = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : new RegExp(pattern.source, pattern.flags.replace('g', ''))
  let ended = false
  server.closed.then(() => { ended = true }, () => {})
  const deadline = Date.now() + timeoutMs
  for (;;) {
    // `ended` first: if the pipes had closed by then, the output read next is all there is.
    const done = ended
    const out = server.output()
    const match = regexp.exec(out.slice(from))
    if (match !== null) {
      match.index += from
      return match
    }
    if (done || Date.now() >= deadline) {
      throw new Error(`${done ? 'the process ended' : `${timeoutMs} ms passed`} without ${String(regexp)} in its output${from > 0 ? ` (from offset ${from})` : ''}; its output so far:\n${tail(out)}`)
    }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** The end of a long output (a fleet node's can run to megabytes). */
function tail (out: string, max = 20_000): string {
  return out.length <= max ? out : `[${out.length - max} characters before]…${out.slice(-max)}`
}

/**
 * The server's output up to now, complete: everything it logged (stdout)
 * before it handled a request sent here. The request (an unknown path, unique to this
 * call) is logged as it arrives ("incoming request"); once that line has been
 * read, so has every line written before it, so lines can be counted, or be
 * checked absent, in what comes before it. The marker line and anything after
 * it are left out. Needs the request lines: LOG_LEVEL info (or lower) and
 * LOG_REQUESTS not false.
 */
export async function outputBefore (server: Output & { http: string }, timeoutMs = 15_000): Promise<string> {
  const path = `/test-log-marker/${randomUUID()}`
  const from = server.output().length
  await (await fetch(`${server.http}${path}`)).arrayBuffer()
  const marker = await waitForOutput(server, `"url":"${path}"`, timeoutMs, from)
  const out = server.output()
  return out.slice(0, out.lastIndexOf('\n', marker.index) + 1)
}

/** Lines of a process's output that contain `text`. */
export const linesWith = (output: string, text: string): string[] => output.split('\n').filter(line => line.includes(text))

/** POSTs a JSON body to a server (in-process or spawned). */
export async function postJson (server: { http: string }, path: string, body: unknown): Promise<Response> {
  return await fetch(`${server.http}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

/** Creates a room over REST; throws unless the server answered 2xx. */
export async function createRoom (server: { http: string }, roomId: string): Promise<void> {
  const res = await postJson(server, '/api/create_room', { roomId })
  if (!res.ok) throw new Error(`create_room ${res.status}`)
}

/** A minimal SDP offer. */
export const OFFER = { type: 'offer', sdp: 'v=0\r\n' }

/**
 * Two peers meet across instances: a room created on `first`, `a` joined
 * there and `b` on `second`, then an offer and an answer each way, checked
 * at every step (membership spans instances, the sender is stamped over a
 * forged one).
 */
export async function handshakeAcross (t: Test, first: ServerProcess, second: ServerProcess, roomId: string): Promise<{ a: TestClient, b: TestClient }> {
  await createRoom(first, roomId)
  const a = await connect(t, first.ws)
  const b = await connect(t, second.ws)
  await join(a, roomId)
  const joined = await join(b, roomId)
  t.same(joined.peers, [a.peerId], 'peers spans instances')
  t.same((await a.next('ready')).data, { peerId: b.peerId }, 'ready crosses instances')
  b.send('offer', { peerId: a.peerId, offer: OFFER, from: 'FORGED' })
  t.same((await a.next('offer')).data, { offer: OFFER, peerId: b.peerId, from: b.peerId }, 'offer relayed, sender stamped')
  a.send('answer', { peerId: b.peerId, answer: { type: 'answer', sdp: 'v=0' } })
  t.equal((await b.next('answer')).data.from, a.peerId)
  return { a, b }
}
