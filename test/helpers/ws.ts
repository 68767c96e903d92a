import WebSocket, { WebSocketServer } from 'ws'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'

type Teardown = { teardown: (fn: () => unknown) => void }

export interface Frame { type: string, data: any, id?: string }

/** A signaling client as a browser would be, with helpers to wait for messages. */
export class TestClient {
  readonly ws: WebSocket
  readonly inbox: Frame[] = []
  readonly opened: Promise<void>
  readonly closed: Promise<{ code: number, reason: string }>
  private waiters: Array<{ match: (f: Frame) => boolean, resolve: (f: Frame) => void }> = []
  private readonly consumed = new Set<Frame>()

  constructor (url: string, options: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, options)
    this.ws.on('error', () => {})
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve())
      this.ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })))
      this.ws.once('error', reject)
    })
    this.closed = new Promise(resolve => this.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    this.ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString()) as Frame
      this.inbox.push(frame)
      const i = this.waiters.findIndex(w => w.match(frame))
      if (i >= 0) {
        const [w] = this.waiters.splice(i, 1)
        this.consumed.add(frame)
        w?.resolve(frame)
      }
    })
  }

  get welcome (): Frame | undefined { return this.inbox[0] }
  get peerId (): string { return this.inbox[0]?.data.peerId }
  get token (): string { return this.inbox[0]?.data.resumeToken }

  send (type: string, data?: unknown, id?: string): void {
    this.ws.send(JSON.stringify(id === undefined ? { type, data } : { type, data, id }))
  }

  /** Resolves with the oldest not yet awaited message of that type (waiting for it if needed). */
  next (type: string, timeoutMs = 3000): Promise<Frame> {
    const match = (f: Frame) => f.type === type
    const found = this.inbox.find(f => match(f) && !this.consumed.has(f))
    if (found !== undefined) {
      this.consumed.add(found)
      return Promise.resolve(found)
    }
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve: (f: Frame) => { clearTimeout(timer); resolve(f) } }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter(w => w !== waiter)
        reject(new Error(`timed out waiting for ${type}; got ${this.inbox.map(f => f.type).join(',')}`))
      }, timeoutMs)
      this.waiters.push(waiter)
    })
  }

  /** Sends and resolves with the direct reply carrying the same id. */
  request (type: string, data: unknown, replyType: string): Promise<Frame> {
    const id = `r${Math.random().toString(36).slice(2)}`
    const reply = new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${replyType} for ${type}`)), 3000)
      this.waiters.push({ match: f => f.id === id, resolve: (f) => { clearTimeout(timer); resolve(f) } })
    })
    this.send(type, data, id)
    return reply.then(f => {
      if (f.type !== replyType && f.type !== 'error') throw new Error(`unexpected ${f.type}`)
      return f
    })
  }

  /** All messages of a type received so far. */
  all (type: string): Frame[] {
    return this.inbox.filter(f => f.type === type)
  }

  close (code = 1000): Promise<{ code: number, reason: string }> {
    this.ws.close(code)
    return this.closed
  }

  /** Drops the TCP connection without a close frame (what a network loss looks like: 1006). */
  drop (): void {
    this.ws.terminate()
  }
}

export async function listen (t: Teardown, app: FastifyInstance): Promise<{ http: string, ws: string }> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return { http: `http://127.0.0.1:${address.port}`, ws: `ws://127.0.0.1:${address.port}/ws` }
}

/** Joins a room with a request; throws unless it succeeded. Resolves with the joinResponse data. */
export async function join (client: TestClient, roomId: string) {
  const res = await client.request('join', { roomId }, 'joinResponse')
  if (res.data.success !== true) throw new Error(`join failed: ${JSON.stringify(res.data)}`)
  return res.data
}

/** Opens a client, waits for its welcome, closes it in teardown. */
export async function connect (t: Teardown, url: string, options?: WebSocket.ClientOptions): Promise<TestClient> {
  const client = new TestClient(url, options)
  t.teardown(() => { client.ws.terminate() })
  await client.opened
  await client.next('welcome')
  return client
}

/** Creates a room over REST and joins `clients` to it in order. */
export async function joinRoom (app: FastifyInstance, roomId: string, ...clients: TestClient[]): Promise<void> {
  await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId } })
  for (const c of clients) await join(c, roomId)
}

export const quietly = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** The HTTP status a refused upgrade was answered with (throws if the upgrade succeeded). */
export async function refusedWith (client: TestClient): Promise<number | undefined> {
  try {
    await client.opened
  } catch (err) {
    return (err as { statusCode?: number }).statusCode
  }
  client.ws.terminate()
  throw new Error('the upgrade was accepted')
}

/**
 * A stand-in signaling server for client tests: `onConnection` decides what
 * each connection gets; `welcome(sock, n)` sends the n-th welcome (same peer,
 * token-n). Closed in teardown.
 */
export async function standInServer (t: Teardown, onConnection: (sock: WebSocket, url: string, attempt: number) => void): Promise<{ port: number, urls: string[] }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  t.teardown(() => new Promise(resolve => {
    for (const sock of wss.clients) sock.terminate()
    wss.close(resolve)
  }))
  const urls: string[] = []
  wss.on('connection', (sock, req) => {
    urls.push(req.url ?? '')
    onConnection(sock, req.url ?? '', urls.length)
  })
  return { port: (wss.address() as AddressInfo).port, urls }
}

/** The welcome of a stand-in server's n-th connection (one peer, a new token each time). */
export function standInWelcome (sock: WebSocket, attempt: number): void {
  sock.send(JSON.stringify({ type: 'welcome', data: { peerId: 'peer-1', protocol: 1, heartbeatMs: 25_000, resumeToken: `token-${attempt}`, iceServers: [] } }))
}
