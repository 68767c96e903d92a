/*
 * Closing or reconnecting the client in any state never crashes Node. With
 * the `ws` package, close() or terminate() on a socket still CONNECTING makes
 * it emit 'error' ("WebSocket was closed before the connection was
 * established") on the next tick; with no 'error' listener left on it, that is
 * an uncaught exception and the process dies. Every scenario below runs
 * against a real server with `ws` as the WebSocket implementation and fails
 * on any uncaught exception.
 */
import t from 'tap'
import WebSocket from 'ws'
import { SignalingClient, type SignalingClientOptions, type WebSocketConstructor } from '../src/client'
import { io, type Socket, type SocketOptions } from '../src/client/socket-io'
import { serveApp, sleep, until } from './helper'

type Teardown = { teardown: (fn: () => unknown) => void }

/** Records uncaught exceptions from now until the test ends (their listener also keeps the process alive). */
function catchUncaught (t: Teardown): Error[] {
  const seen: Error[] = []
  const onUncaught = (err: Error) => { seen.push(err) }
  process.on('uncaughtException', onUncaught)
  t.teardown(() => { process.off('uncaughtException', onUncaught) })
  return seen
}

interface Hooks {
  /** Right after a socket is constructed (the client has not stored it yet). */
  created?: (ws: WebSocket) => void
  /** When a socket opens, before any frame (the welcome) is handled. */
  opened?: (ws: WebSocket) => void
}

/** `ws` with hooks on each socket the client creates. */
function hooked (hooks: Hooks): WebSocketConstructor {
  return class extends WebSocket {
    constructor (url: string) {
      super(url)
      const opened = hooks.opened
      if (opened !== undefined) this.once('open', () => opened(this))
      hooks.created?.(this)
    }
  } as unknown as WebSocketConstructor
}

async function setup (t: Teardown) {
  const served = await serveApp(t, 'memory', { RESUME_GRACE_MS: '5000' })
  const client = (hooks: Hooks = {}, opts: Partial<SignalingClientOptions> = {}) => {
    const c = new SignalingClient({ url: served.ws, WebSocket: hooked(hooks), requestTimeoutMs: 2000, reconnect: { initialDelayMs: 50, maxDelayMs: 100, jitter: 0 }, ...opts })
    t.teardown(() => c.close())
    return c
  }
  const socket = (hooks: Hooks = {}, opts: SocketOptions = {}) => {
    const s = io(served.http, { WebSocket: hooked(hooks), reconnectionDelay: 50, reconnectionDelayMax: 100, randomizationFactor: 0, ...opts })
    t.teardown(() => s.disconnect())
    return s
  }
  return { ...served, client, socket }
}

/** Time for ws to emit what it deferred to the next tick, and for a close to be seen. */
const settle = () => sleep(200)

const CONNECTING = 0
const OPEN = 1

t.test('SignalingClient.close() while the socket is CONNECTING', async (t) => {
  const uncaught = catchUncaught(t)
  const { client } = await setup(t)
  const c = client()
  c.connect().catch(() => {})
  t.equal(((c as unknown as { ws: WebSocket }).ws).readyState, CONNECTING)
  c.close()
  t.equal(c.state, 'closed')
  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.equal(c.state, 'closed')
})

t.test('SignalingClient.reconnectNow() while the socket is CONNECTING, then it connects', async (t) => {
  const uncaught = catchUncaught(t)
  const { client } = await setup(t)
  const c = client()
  const opened = c.connect()
  t.equal(((c as unknown as { ws: WebSocket }).ws).readyState, CONNECTING)
  c.reconnectNow()
  t.equal(c.state, 'reconnecting')
  await opened
  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.equal(c.state, 'open', 'the next attempt connected')
})

t.test('SignalingClient.close() right after open, before the welcome', async (t) => {
  const uncaught = catchUncaught(t)
  const { client } = await setup(t)
  const states: string[] = []
  const c: SignalingClient = client({
    opened: (ws) => {
      states.push(`${c.state}:${ws.readyState}`)
      c.close()
    }
  })
  c.connect().catch(() => {})
  t.ok(await until(() => states.length === 1))
  t.same(states, [`connecting:${OPEN}`], 'open, no welcome yet')
  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.equal(c.state, 'closed')
  t.equal(c.peerId, null, 'the welcome was never handled')
})

t.test('SignalingClient.reconnectNow() right after open, before the welcome', async (t) => {
  const uncaught = catchUncaught(t)
  const { client } = await setup(t)
  let first = true
  const c: SignalingClient = client({
    opened: () => {
      if (!first) return
      first = false
      c.reconnectNow()
    }
  })
  await c.connect()
  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.equal(c.state, 'open')
})

t.test('SignalingClient while reconnecting: close() with the timer pending, and close()/reconnectNow() while the next attempt is CONNECTING', async (t) => {
  const uncaught = catchUncaught(t)
  const { client } = await setup(t)

  // The reconnect timer is pending (no socket): close() and reconnectNow().
  const pending = client()
  await pending.connect()
  ;((pending as unknown as { ws: { _socket: { destroy: () => void } } }).ws._socket).destroy()
  await new Promise(resolve => pending.once('reconnecting', resolve))
  t.equal(pending.state, 'reconnecting')
  pending.reconnectNow()
  pending.close()
  t.equal(pending.state, 'closed')

  // The next attempt's socket is CONNECTING (state still 'reconnecting'): reconnectNow() then close().
  let sockets = 0
  let during: string[] = []
  const c: SignalingClient = client({
    created: (ws) => {
      if (++sockets !== 2) return
      // After open() has stored the socket, before its handshake can finish.
      queueMicrotask(() => {
        during.push(`${c.state}:${ws.readyState}`)
        c.reconnectNow()
      })
    }
  })
  await c.connect()
  const reopened = new Promise(resolve => c.once('open', resolve))
  ;((c as unknown as { ws: { _socket: { destroy: () => void } } }).ws._socket).destroy()
  await reopened
  t.same(during, [`reconnecting:${CONNECTING}`], 'reconnectNow() hit a CONNECTING socket while reconnecting')

  during = []
  let closeAt = 0
  const d: SignalingClient = client({
    created: (ws) => {
      if (++closeAt !== 2) return
      queueMicrotask(() => {
        during.push(`${d.state}:${ws.readyState}`)
        d.close()
      })
    }
  })
  await d.connect()
  ;((d as unknown as { ws: { _socket: { destroy: () => void } } }).ws._socket).destroy()
  t.ok(await until(() => during.length === 1))
  t.same(during, [`reconnecting:${CONNECTING}`], 'close() hit a CONNECTING socket while reconnecting')
  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.equal(d.state, 'closed')
})

t.test('SignalingClient after the server went away (1001): close() while an attempt is CONNECTING', async (t) => {
  const uncaught = catchUncaught(t)
  const { app, client } = await setup(t)
  let sockets = 0
  const during: string[] = []
  const c: SignalingClient = client({
    created: (ws) => {
      if (++sockets !== 2) return
      queueMicrotask(() => {
        during.push(`${c.state}:${ws.readyState}`)
        c.close()
      })
    }
  })
  await c.connect()
  const closed = new Promise<{ code: number }>(resolve => c.once('close', resolve))
  await app.close()
  t.equal((await closed).code, 1001)
  t.ok(await until(() => during.length === 1))
  t.same(during, [`reconnecting:${CONNECTING}`])
  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.equal(c.state, 'closed')
})

t.test('socket.io disconnect() while CONNECTING, right after open and while reconnecting', async (t) => {
  const uncaught = catchUncaught(t)
  const { socket } = await setup(t)

  const connecting = socket()
  t.equal(((connecting.signaling as unknown as { ws: WebSocket }).ws).readyState, CONNECTING)
  connecting.disconnect()
  t.equal(connecting.active, false)

  const states: number[] = []
  const early: Socket = socket({
    opened: (ws) => {
      states.push(ws.readyState)
      early.disconnect()
    }
  })
  t.ok(await until(() => states.length === 1))
  t.same(states, [OPEN])

  let sockets = 0
  const during: string[] = []
  const later: Socket = socket({
    created: (ws) => {
      if (++sockets !== 2) return
      queueMicrotask(() => {
        during.push(`${later.signaling.state}:${ws.readyState}`)
        later.disconnect()
      })
    }
  })
  await new Promise(resolve => later.once('connect', () => resolve(undefined)))
  ;((later.signaling as unknown as { ws: { _socket: { destroy: () => void } } }).ws._socket).destroy()
  t.ok(await until(() => during.length === 1))
  t.same(during, [`reconnecting:${CONNECTING}`])

  await settle()
  t.same(uncaught.map(e => e.message), [], 'no uncaught error')
  t.same([connecting.active, early.active, later.active], [false, false, false])
  t.same([connecting.connected, early.connected, later.connected], [false, false, false])
})
