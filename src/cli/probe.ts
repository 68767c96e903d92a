import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'

/** The steps, in order: their names are what a failure names. */
const STEPS = [
  'create_room', 'connect_a', 'connect_b', 'join_a', 'join_b',
  'offer', 'answer', 'ice_a_to_b', 'ice_b_to_a', 'resume', 'relay_after_resume', 'leave'
] as const
type StepName = typeof STEPS[number]

const USAGE = `Usage: npm run probe -- --url https://signal.example.com [--url2 URL] [--json] [--timeout-ms N] [--total-timeout-ms N]

A synthetic check of a deployment, for after every deploy and for an uptime
monitor. It creates a room over REST, opens two WebSockets (the first peer on
--url, the second on --url2), joins both, relays an offer, an answer and an
ICE candidate each way, drops the second peer's socket and resumes it through
--url (same peer id, and a relay reaches it again), then leaves. It prints the
time of each step and exits non-zero naming the step that failed or ran over
its time limit.

  --url URL              the server's http(s) URL: REST at URL/api/…, the WebSocket at ws(s)://…/ws
  --url2 URL             where the second peer connects (another instance, a second region); default: --url
  --json                 print one JSON object: { ok, url, url2, roomId, steps: [{ step, ok, ms, error? }], total, failedStep, error }
  --timeout-ms N         time limit of each step (default 5000)
  --total-timeout-ms N   time limit of the whole probe (default 30000)

Steps: ${STEPS.join(', ')}.
Exit status: 0 every step passed; 1 a step failed or ran over a limit; 2 bad arguments.`

interface StepResult { step: StepName, ok: boolean, ms: number, error?: string }
interface Frame { type: string, data: Record<string, any>, id?: string }

class UsageError extends Error {}
class StepFailed extends Error {
  constructor (readonly step: StepName, message: string) { super(message) }
}

const OFFER = { type: 'offer', sdp: 'v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=privydrop-probe\r\nt=0 0\r\n' }
const ANSWER = { type: 'answer', sdp: 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=privydrop-probe\r\nt=0 0\r\n' }
// A documentation address (RFC 5737): the probe's candidates lead nowhere.
const candidate = (n: number) => ({ candidate: `candidate:${n} 1 udp 2122260223 192.0.2.${n} 9 typ host`, sdpMid: '0', sdpMLineIndex: 0 })

/** REST base and WebSocket URL of a server URL (a path prefix is kept: https://h/p → https://h/p/api, wss://h/p/ws). */
function endpoints (option: string, raw: string): { http: string, ws: string } {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new UsageError(`${option} ${raw} is not a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${option} must be an http:// or https:// URL (the WebSocket URL is derived from it)`)
  const base = url.origin + url.pathname.replace(/\/+$/, '')
  return { http: base, ws: `${base.replace(/^http/, 'ws')}/ws` }
}

function positive (option: string, raw: string): number {
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${option} must be a whole number of milliseconds above 0`)
  return n
}

/** What a failed fetch or socket says, without the stack: "connect ECONNREFUSED 127.0.0.1:9". */
function reason (err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const cause = (err as { cause?: unknown }).cause
  if (cause instanceof Error) return cause.message
  return err.message
}

/**
 * One peer's WebSocket: frames wait in an inbox until a step asks for them.
 * Anything that goes wrong on it (an `error` frame from the server, an
 * unexpected close, a refused upgrade) fails whatever waits on it.
 */
class Peer {
  readonly ws: WebSocket
  private readonly inbox: Frame[] = []
  private waiters: Array<{ match: (f: Frame) => boolean, resolve: (f: Frame) => void, reject: (err: Error) => void }> = []
  private troubleText: string | null = null
  private readonly troubleListeners: Array<(err: Error) => void> = []
  private leaving = false

  constructor (url: string, handshakeTimeout: number) {
    this.ws = new WebSocket(url, { handshakeTimeout })
    this.ws.on('message', (raw) => {
      let frame: Frame
      try {
        frame = JSON.parse(raw.toString()) as Frame
      } catch {
        this.fail('the server sent a frame that is not JSON')
        return
      }
      if (frame.type === 'error') {
        const about = typeof frame.data['type'] === 'string' ? ` to ${frame.data['type']}` : ''
        this.fail(`the server answered error ${String(frame.data['code'])}${about}: ${String(frame.data['message'])}`)
        return
      }
      const i = this.waiters.findIndex(w => w.match(frame))
      if (i < 0) {
        this.inbox.push(frame)
        return
      }
      const [waiter] = this.waiters.splice(i, 1)
      waiter?.resolve(frame)
    })
    this.ws.on('unexpected-response', (_req, res) => {
      this.fail(`the upgrade was refused: HTTP ${res.statusCode ?? '?'}`)
      this.ws.terminate()
    })
    this.ws.on('error', (err) => this.fail(`cannot connect to ${url}: ${reason(err)}`))
    this.ws.on('close', (code, why) => {
      if (!this.leaving) this.fail(`the connection closed (${code}${why.length > 0 ? ` ${why.toString()}` : ''})`)
    })
  }

  private fail (text: string): void {
    if (this.troubleText !== null) return
    this.troubleText = text
    const err = new Error(text)
    for (const w of this.waiters.splice(0)) w.reject(err)
    for (const listener of this.troubleListeners.splice(0)) listener(err)
  }

  /** Rejects as soon as something goes wrong on this socket (never resolves). */
  trouble (): Promise<never> {
    return new Promise((_resolve, reject) => {
      if (this.troubleText !== null) reject(new Error(this.troubleText))
      else this.troubleListeners.push(reject)
    })
  }

  /** The next frame of this type (and matching `match`), received already or to come. */
  next (type: string, match: (f: Frame) => boolean = () => true): Promise<Frame> {
    const wanted = (f: Frame): boolean => f.type === type && match(f)
    const i = this.inbox.findIndex(wanted)
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as Frame)
    if (this.troubleText !== null) return Promise.reject(new Error(this.troubleText))
    return new Promise((resolve, reject) => { this.waiters.push({ match: wanted, resolve, reject }) })
  }

  send (type: string, data: unknown, id?: string): void {
    this.ws.send(JSON.stringify(id === undefined ? { type, data } : { type, data, id }))
  }

  /** Drops the connection without a close frame, as a network loss would (the server holds the session). */
  drop (): void {
    this.leaving = true
    this.ws.terminate()
  }

  close (): void {
    this.leaving = true
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate()
    else this.ws.close(1000)
  }
}

/** The welcome: a peer id, a resume token, protocol 1. */
async function welcomed (peer: Peer): Promise<{ peerId: string, token: string }> {
  const welcome = await peer.next('welcome')
  const { peerId, resumeToken, protocol } = welcome.data
  if (typeof peerId !== 'string' || typeof resumeToken !== 'string') throw new Error('the welcome carries no peerId or resumeToken')
  if (protocol !== 1) throw new Error(`the welcome speaks protocol ${String(protocol)}, not 1`)
  return { peerId, token: resumeToken }
}

/** A relayed frame as the target sees it: the payload intact, the sender stamped by the server. */
function relayed (frame: Frame, key: string, sent: unknown, from: string): void {
  if (frame.data['from'] !== from || frame.data['peerId'] !== from) throw new Error(`${frame.type} arrived from ${String(frame.data['from'])}, not from ${from}`)
  if (JSON.stringify(frame.data[key]) !== JSON.stringify(sent)) throw new Error(`${frame.type} arrived altered`)
}

interface Options { url: string, url2: string, json: boolean, stepMs: number, totalMs: number }

function options (argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      url2: { type: 'string' },
      json: { type: 'boolean', default: false },
      'timeout-ms': { type: 'string', default: '5000' },
      'total-timeout-ms': { type: 'string', default: '30000' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) return null
  if (values.url === undefined) throw new UsageError('--url is required')
  return {
    url: values.url,
    url2: values.url2 ?? values.url,
    json: values.json,
    stepMs: positive('--timeout-ms', values['timeout-ms']),
    totalMs: positive('--total-timeout-ms', values['total-timeout-ms'])
  }
}

async function probe (opts: Options): Promise<{ roomId: string, steps: StepResult[], total: number, failure: StepFailed | null }> {
  const first = endpoints('--url', opts.url)
  const second = endpoints('--url2', opts.url2)
  const roomId = `probe-${randomBytes(6).toString('hex')}`
  const steps: StepResult[] = []
  const peers: Peer[] = []
  const started = performance.now()
  const deadline = started + opts.totalMs

  /** Runs a step within its limit (the step's own, or what is left of the total); records it. */
  async function step<T> (name: StepName, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const at = performance.now()
    const left = deadline - at
    const limit = Math.min(opts.stepMs, left)
    const overrun = limit < opts.stepMs ? `ran over the total time limit of ${opts.totalMs} ms` : `ran over its time limit of ${opts.stepMs} ms`
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    try {
      if (limit <= 0) throw new Error(overrun)
      const value = await Promise.race([
        run(controller.signal),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => {
            controller.abort()
            reject(new Error(overrun))
          }, limit)
        })
      ])
      steps.push({ step: name, ok: true, ms: ms(performance.now() - at) })
      return value
    } catch (err) {
      const message = reason(err)
      steps.push({ step: name, ok: false, ms: ms(performance.now() - at), error: message })
      throw new StepFailed(name, message)
    } finally {
      clearTimeout(timer)
    }
  }

  const open = (url: string): Peer => {
    const peer = new Peer(url, opts.stepMs)
    peers.push(peer)
    return peer
  }

  let failure: StepFailed | null = null
  try {
    await step('create_room', async (signal) => {
      const url = `${first.http}/api/create_room`
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId }), signal })
        .catch((err: unknown) => { throw new Error(`cannot reach ${url}: ${reason(err)}`) })
      const body = await res.json().catch(() => null) as { success?: unknown, message?: unknown } | null
      if (!res.ok) throw new Error(`POST ${url} answered HTTP ${res.status}${typeof body?.message === 'string' ? `: ${body.message}` : ''}`)
      if (body?.success !== true) throw new Error(`the room was not created: ${JSON.stringify(body)}`)
    })

    const a = open(first.ws)
    const idA = await step('connect_a', async () => await welcomed(a))
    const b = open(second.ws)
    const idB = await step('connect_b', async () => await welcomed(b))

    const joined = async (peer: Peer, id: string): Promise<Frame> => {
      peer.send('join', { roomId }, id)
      const reply = await peer.next('joinResponse', f => f.id === id)
      if (reply.data['success'] !== true) throw new Error(`the join was refused: ${String(reply.data['code'] ?? '')} ${String(reply.data['message'] ?? '')}`.trim())
      return reply
    }
    await step('join_a', async () => { await joined(a, 'probe-join-a') })
    await step('join_b', async () => {
      const reply = await joined(b, 'probe-join-b')
      const peers = reply.data['peers'] as unknown
      if (!Array.isArray(peers) || !peers.includes(idA.peerId)) throw new Error(`the second peer does not see the first in the room (peers: ${JSON.stringify(peers)})`)
      const ready = await Promise.race([a.next('ready'), a.trouble()])
      if (ready.data['peerId'] !== idB.peerId) throw new Error('the first peer heard ready from someone else')
    })

    const relay = async (from: Peer, fromId: string, to: Peer, toId: string, type: string, key: string, payload: unknown): Promise<void> => {
      from.send(type, { peerId: toId, [key]: payload })
      const frame = await Promise.race([to.next(type), from.trouble()])
      relayed(frame, key, payload, fromId)
    }
    await step('offer', () => relay(a, idA.peerId, b, idB.peerId, 'offer', 'offer', OFFER))
    await step('answer', () => relay(b, idB.peerId, a, idA.peerId, 'answer', 'answer', ANSWER))
    await step('ice_a_to_b', () => relay(a, idA.peerId, b, idB.peerId, 'ice-candidate', 'candidate', candidate(1)))
    await step('ice_b_to_a', () => relay(b, idB.peerId, a, idA.peerId, 'ice-candidate', 'candidate', candidate(2)))

    // The second peer's network drops; it comes back through the first URL
    // (with two instances, its session moves to the first one).
    b.drop()
    const b2 = open(`${first.ws}?resume=${encodeURIComponent(idB.token)}`)
    await step('resume', async () => {
      const again = await welcomed(b2)
      if (again.peerId !== idB.peerId) throw new Error(`the resume gave a new identity (${again.peerId}, not ${idB.peerId}): the session was lost`)
      if (again.token === idB.token) throw new Error('the resume token was not rotated')
    })
    await step('relay_after_resume', () => relay(a, idA.peerId, b2, idB.peerId, 'ice-candidate', 'candidate', candidate(3)))

    await step('leave', async () => {
      a.send('leave', { roomId }, 'probe-leave')
      const reply = await a.next('leaveResponse', f => f.id === 'probe-leave')
      if (reply.data['success'] !== true) throw new Error(`the leave was refused: ${String(reply.data['code'] ?? '')}`)
      const gone = await Promise.race([b2.next('peer-disconnected'), b2.trouble()])
      if (gone.data['peerId'] !== idA.peerId) throw new Error('the second peer heard of the wrong departure')
    })
  } catch (err) {
    if (!(err instanceof StepFailed)) throw err
    failure = err
  } finally {
    for (const peer of peers) peer.close()
  }
  return { roomId, steps, total: ms(performance.now() - started), failure }
}

const ms = (value: number): number => Math.round(value * 10) / 10

async function main (): Promise<number> {
  let opts: Options | null
  try {
    opts = options(process.argv.slice(2))
    if (opts !== null) {
      endpoints('--url', opts.url)
      endpoints('--url2', opts.url2)
    }
  } catch (err) {
    process.stderr.write(`probe: ${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  if (opts === null) {
    process.stdout.write(USAGE + '\n')
    return 0
  }

  const { roomId, steps, total, failure } = await probe(opts)
  if (opts.json) {
    process.stdout.write(JSON.stringify({
      ok: failure === null,
      url: opts.url,
      url2: opts.url2,
      roomId,
      steps,
      total,
      failedStep: failure?.step ?? null,
      error: failure === null ? null : `${failure.step}: ${failure.message}`
    }) + '\n')
  } else {
    const lines = [`probe ${opts.url}${opts.url2 !== opts.url ? ` and ${opts.url2}` : ''}, room ${roomId}`]
    for (const s of steps) lines.push(`  ${s.ok ? 'ok  ' : 'FAIL'}  ${s.step.padEnd(18)} ${s.ms.toFixed(1).padStart(8)} ms${s.error !== undefined ? `  ${s.error}` : ''}`)
    lines.push(failure === null ? `ok: ${steps.length} steps in ${total} ms` : `FAILED at ${failure.step} after ${total} ms`)
    process.stdout.write(lines.join('\n') + '\n')
    if (failure !== null) process.stderr.write(`probe: ${failure.step} failed: ${failure.message}\n`)
  }
  return failure === null ? 0 : 1
}

main().then((code) => { process.exitCode = code }, (err: Error) => {
  process.stderr.write(`probe: ${err.stack ?? err.message}\n`)
  process.exitCode = 1
})
