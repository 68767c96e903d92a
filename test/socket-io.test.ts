import t from 'tap'
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import ioDefault, { io, toWebSocketUrl, type SignalingErrorDetails, type Socket, type SocketOptions } from '../src/client/socket-io'
import type { WebSocketConstructor } from '../src/client'
import { createRestClient } from '../src/client'
import { serveApp } from './helper'
import { freePort } from './helpers/redis'
import { standInServer, standInWelcome } from './helpers/ws'
import type { EnvSource } from '../src/config'

type Teardown = { teardown: (fn: () => unknown) => void }

async function setup (t: Teardown, env: EnvSource = {}) {
  const served = await serveApp(t, 'memory', env)
  const make = (opts: SocketOptions = {}) => {
    const socket = io(served.http, { path: '/socket.io/', transports: ['websocket', 'polling'], WebSocket: WebSocket as unknown as WebSocketConstructor, ...opts })
    t.teardown(() => socket.disconnect())
    return socket
  }
  return { ...served, make, rest: createRestClient(served.http) }
}

/** Resolves with the arguments of the next `event` on the socket; fails the test after 5 s, so a broken module fails fast. */
const next = (socket: Socket, event: string, timeoutMs = 5000): Promise<any[]> => new Promise((resolve, reject) => {
  const timer = setTimeout(() => {
    socket.off(event, onEvent)
    reject(new Error(`no ${event} within ${timeoutMs} ms`))
  }, timeoutMs)
  const onEvent = (...args: any[]) => {
    clearTimeout(timer)
    resolve(args)
  }
  socket.once(event, onEvent)
})
/** Resolves once the socket is connected (at once if it is). */
const connected = async (socket: Socket) => { if (!socket.connected) await next(socket, 'connect') }
/** The direct reply to a join emitted now, as the web app waits for it. */
async function join (socket: Socket, roomId: string) {
  const reply = new Promise<{ success: boolean, message: string, roomId: string, peers?: string[] }>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('joinResponse', onReply)
      reject(new Error(`no joinResponse for ${roomId}`))
    }, 5000)
    const onReply = (res: { success: boolean, message: string, roomId: string, peers?: string[] }) => {
      if (res.roomId !== roomId) return
      clearTimeout(timer)
      socket.off('joinResponse', onReply)
      resolve(res)
    }
    socket.on('joinResponse', onReply)
  })
  socket.emit('join', { roomId })
  return reply
}
/** A round trip: everything the server sent this socket before its pong has arrived. */
async function roundTrip (socket: Socket) {
  const pong = next(socket, 'pong')
  socket.emit('ping', {})
  await pong
}

t.test('io() maps the socket.io URL to /ws and connects at once; id is the peerId', async (t) => {
  t.equal(toWebSocketUrl('http://127.0.0.1:3000'), 'ws://127.0.0.1:3000/ws')
  t.equal(toWebSocketUrl('https://signal.example.com/some-namespace?x=1'), 'wss://signal.example.com/ws')
  t.equal(toWebSocketUrl('wss://signal.example.com'), 'wss://signal.example.com/ws')
  t.equal(toWebSocketUrl('https://signal.example.com', '/signaling/ws'), 'wss://signal.example.com/signaling/ws')
  t.equal(ioDefault, io, 'default export is io')

  const { make } = await setup(t)
  const socket = make()
  t.equal(socket.id, undefined, 'no id before the welcome')
  t.equal(socket.connected, false)
  const events: string[] = []
  socket.on('connect', () => events.push(`connect:${String(socket.connected)}`))
  await next(socket, 'connect')
  t.same(events, ['connect:true'])
  t.equal(socket.connected, true)
  t.equal(socket.disconnected, false)
  t.match(socket.id, /^[A-Za-z0-9_-]{16,}$/)
  t.equal(socket.id, socket.signaling.peerId)
})

t.test('on/once/off with and without a handler; emit sends {type, data}; chainable', async (t) => {
  const { make, rest } = await setup(t)
  const a = make()
  const b = make()
  await connected(a)
  await connected(b)
  const { roomId } = await rest.getRoom()
  t.same(await join(a, roomId), { success: true, message: 'Successfully joined room', roomId, peerId: a.id, peers: [] })

  const every: string[] = []
  const onceSeen: string[] = []
  const removed: string[] = []
  const handler = (data: { roomId: string }) => removed.push(data.roomId)
  t.equal(a.on('initiator-online', (data) => every.push(data.roomId)), a, 'on is chainable')
  t.equal(a.once('initiator-online', (data) => onceSeen.push(data.roomId)), a, 'once is chainable')
  a.on('initiator-online', handler)
  t.equal(a.off('initiator-online', handler), a, 'off is chainable')
  // once(fn) then off(event, fn) removes it too, as socket.io's emitter does.
  const never = () => removed.push('once-removed')
  a.once('initiator-online', never).off('initiator-online', never)
  t.ok(a.hasListeners('initiator-online'))
  t.equal(a.listeners('initiator-online').length, 2)

  t.same((await join(b, roomId)).peers, [a.id])
  t.equal(b.emit('initiator-online', { roomId }), b, 'emit is chainable')
  b.emit('initiator-online', { roomId })
  await roundTrip(b)
  await roundTrip(a)
  t.same(every, [roomId, roomId], 'on: every message')
  t.same(onceSeen, [roomId], 'once: the first only')
  t.same(removed, [], 'off(event, fn): that handler no more')

  // off(event) with no handler removes every handler of that event (the web app's off('joinResponse')).
  const joinReplies: unknown[] = []
  a.on('joinResponse', (r) => joinReplies.push(r)).on('joinResponse', (r) => joinReplies.push(r))
  a.off('joinResponse')
  t.notOk(a.hasListeners('joinResponse'))
  a.emit('join', { roomId }) // a same-room rejoin: allowed, replied to
  await roundTrip(a)
  t.same(joinReplies, [], 'off(event) removed all of them')

  // off() with nothing removes everything.
  a.off()
  t.notOk(a.hasListeners('initiator-online'))
  b.emit('initiator-online', { roomId })
  await roundTrip(b)
  await roundTrip(a)
  t.same(every, [roomId, roomId])

  // Relays carry `from`, the sender's id.
  const offer = next(a, 'offer')
  b.emit('offer', { peerId: a.id ?? '', offer: { type: 'offer', sdp: 'v=0' }, from: 'forged' })
  t.same((await offer)[0], { offer: { type: 'offer', sdp: 'v=0' }, peerId: b.id, from: b.id })

  t.throws(() => a.emit('connect' as never, {} as never), /reserved event name/)
  t.throws(() => (a.emit as (...args: unknown[]) => Socket)('join', { roomId }, () => {}), /acknowledgements are not supported/)
})

t.test('id and room survive a dropped socket (resume): disconnect then connect, same id', async (t) => {
  const { make, rest } = await setup(t, { RESUME_GRACE_MS: '5000' })
  const { roomId } = await rest.getRoom()
  const a = make({ reconnectionDelay: 100, reconnectionDelayMax: 100, randomizationFactor: 0 })
  const b = make()
  await connected(a)
  await connected(b)
  await join(a, roomId)
  await join(b, roomId)
  const firstId = a.id
  const gone: string[] = []
  b.on('peer-disconnected', ({ peerId }) => gone.push(peerId))
  const events: string[] = []
  a.on('disconnect', (reason, details) => events.push(`disconnect:${reason}:${details.code}:${String(a.connected)}`))
  a.on('connect', () => events.push(`connect:${String(a.id === firstId)}`))
  const reconnected = next(a, 'connect')
  const disconnected = next(a, 'disconnect')
  // A network loss: the TCP connection just goes away (the server sees 1006).
  ;((a.signaling as unknown as { ws: { _socket: { destroy: () => void } } }).ws._socket).destroy()
  await disconnected
  t.equal(a.connected, false)
  t.equal(a.id, firstId, 'id kept while disconnected')
  // Queued while disconnected, delivered after the resume.
  const candidate = next(b, 'ice-candidate')
  a.emit('ice-candidate', { peerId: b.id ?? '', candidate: { candidate: 'candidate:1' }, from: a.id })
  await reconnected
  t.equal(a.id, firstId, 'same id after the resume')
  t.equal(a.connected, true)
  t.same((await candidate)[0], { candidate: { candidate: 'candidate:1' }, peerId: firstId, from: firstId })
  t.same(events, ['disconnect:transport close:1006:false', 'connect:true'])
  // Still in the room: b's offer reaches a without a rejoin.
  const offer = next(a, 'offer')
  b.emit('offer', { peerId: a.id ?? '', offer: { type: 'offer', sdp: 'v=0' } })
  await offer
  await roundTrip(b)
  t.same(gone, [], 'nobody saw a disconnect')
})

t.test('a ping timeout is reported as socket.io\'s "ping timeout" and heals with the same id', async (t) => {
  const { make, rest } = await setup(t, { RESUME_GRACE_MS: '5000' })
  const a = make({ reconnectionDelay: 50, reconnectionDelayMax: 50, randomizationFactor: 0, signaling: { pingIntervalMs: 100, pingTimeoutMs: 200 } })
  await connected(a)
  await join(a, (await rest.getRoom()).roomId)
  const firstId = a.id
  const disconnected = next(a, 'disconnect')
  const reconnected = next(a, 'connect')
  ;((a.signaling as unknown as { ws: { _socket: { pause: () => void } } }).ws._socket).pause()
  t.same((await disconnected)[0], 'ping timeout')
  await reconnected
  t.equal(a.id, firstId)
})

t.test('disconnect() closes for good: the room hears it at once; connect() starts a new session', async (t) => {
  const { make, rest } = await setup(t, { RESUME_GRACE_MS: '5000' })
  const { roomId } = await rest.getRoom()
  const a = make({ reconnectionDelay: 50 })
  const b = make()
  await connected(a)
  await connected(b)
  await join(a, roomId)
  await join(b, roomId)
  const firstId = a.id
  const gone = next(b, 'peer-disconnected')
  const disconnected = next(a, 'disconnect')
  t.equal(a.disconnect(), a, 'chainable')
  t.equal(a.connected, false)
  t.equal(a.active, false)
  t.same((await disconnected)[0], 'io client disconnect')
  t.same((await gone)[0], { peerId: firstId })
  t.equal(a.connect(), a, 'chainable')
  await next(a, 'connect')
  t.not(a.id, firstId, 'a new session after a client close')
  // The new session has no room: joining another room sends no leave.
  const other = (await rest.getRoom()).roomId
  t.equal((await join(a, other)).success, true)
})

t.test('server error frames surface as signaling_error, never as error', async (t) => {
  const { make } = await setup(t)
  const a = make()
  await connected(a)
  const errors: unknown[] = []
  a.on('error', (e: unknown) => errors.push(e))
  const refused: Array<{ code: string, type?: string }> = []
  a.on('signaling_error', (e) => refused.push(e))
  a.emit('offer', { peerId: 'nobody-here-at-all', offer: { type: 'offer', sdp: 'v=0' } })
  a.emit('initiator-online', { roomId: 'not-mine' })
  a.emit('no-such-type', {})
  await roundTrip(a)
  t.same(refused.map(e => [e.code, e.type]), [['peer_not_found', 'offer'], ['not_in_room', 'initiator-online'], ['unknown_type', 'no-such-type']])
  t.same(errors, [], 'no error event')
  t.equal(a.connected, true, 'still connected')
})

t.test('signaling_error names the refused emit: its id, event and target peerId', async (t) => {
  const { make, rest } = await setup(t)
  const { roomId } = await rest.getRoom()
  const a = make()
  const b = make()
  await connected(a)
  await connected(b)
  await join(a, roomId)
  await join(b, roomId)
  const refused: SignalingErrorDetails[] = []
  a.on('signaling_error', (e) => refused.push(e))
  // Accepted relays get no reply.
  const got = next(b, 'ice-candidate')
  a.emit('ice-candidate', { peerId: b.id ?? '', candidate: null, from: a.id })
  await got
  await roundTrip(a)
  t.same(refused, [], 'silence is success')

  // b leaves: what a still sends to it is refused, one signaling_error per message.
  await new Promise<void>(resolve => { b.once('leaveResponse', () => resolve()); b.emit('leave', { roomId }) })
  a.emit('offer', { peerId: b.id ?? '', offer: { type: 'offer', sdp: 'v=0' }, from: a.id })
  a.emit('ice-candidate', { peerId: b.id ?? '', candidate: { candidate: 'candidate:1' }, from: a.id })
  a.emit('recipient-ready', { roomId: 'not-mine', peerId: a.id })
  a.emit('no-such-type', {})
  await roundTrip(a)
  const message = 'Target peer not found in your room'
  t.match(refused, [
    { code: 'peer_not_found', message, type: 'offer', event: 'offer', peerId: b.id, id: /^c-\d+$/ },
    { code: 'peer_not_found', message, type: 'ice-candidate', event: 'ice-candidate', peerId: b.id, id: /^c-\d+$/ },
    { code: 'not_in_room', type: 'recipient-ready', event: 'recipient-ready', id: /^c-\d+$/ },
    { code: 'unknown_type', type: 'no-such-type', event: 'no-such-type', id: /^c-\d+$/ }
  ])
  t.equal(refused.length, 4)
  t.equal(new Set(refused.map(e => e.id)).size, 4, 'one id per emit')
  t.notOk('peerId' in (refused[2] ?? {}), 'no target for a broadcast (its peerId is the sender\'s own)')
  t.same(Object.keys(refused[0] ?? {}).sort(), ['code', 'event', 'id', 'message', 'peerId', 'type'])
})

t.test('a 1012 close (an instance leaving) is a "transport close" that reconnects with the same id', async (t) => {
  const { port, urls } = await standInServer(t, (sock, _url, attempt) => {
    standInWelcome(sock, attempt)
    if (attempt === 1) setTimeout(() => sock.close(1012, 'instance leaving: redis unreachable'), 20)
  })
  const socket = io(`http://127.0.0.1:${port}`, { WebSocket: WebSocket as unknown as WebSocketConstructor, reconnectionDelay: 100 })
  t.teardown(() => socket.disconnect())
  await next(socket, 'connect')
  const [reason, details] = await next(socket, 'disconnect')
  t.equal(reason, 'transport close')
  t.same(details, { code: 1012, reason: 'instance leaving: redis unreachable' })
  t.equal(socket.active, true, 'it reconnects by itself')
  await next(socket, 'connect', 1000)
  t.equal(socket.id, 'peer-1')
  t.same(urls, ['/ws', '/ws?resume=token-1'])
})

t.test('a failed connection is connect_error, not error; autoConnect: false waits for connect()', async (t) => {
  const port = await freePort() // nothing listens there
  const lost = io(`http://127.0.0.1:${port}`, { WebSocket: WebSocket as unknown as WebSocketConstructor, reconnection: false })
  t.teardown(() => lost.disconnect())
  const errors: unknown[] = []
  lost.on('error', (e: unknown) => errors.push(e))
  const [err] = await next(lost, 'connect_error')
  t.ok(err instanceof Error)
  t.equal(lost.connected, false)
  t.equal(lost.id, undefined)
  t.same(errors, [])

  const { make, rest } = await setup(t)
  const { roomId } = await rest.getRoom()
  const lazy = make({ autoConnect: false })
  const opened: string[] = []
  lazy.on('connect', () => opened.push('connect'))
  const reply = next(lazy, 'joinResponse')
  lazy.emit('join', { roomId }) // buffered until connected, as socket.io does
  await roundTrip(make()) // a server round trip: lazy would have connected by now if it were going to
  t.same(opened, [], 'not connected before connect()')
  lazy.connect()
  t.equal((await reply)[0].success, true, 'the buffered join went out after connect')
  t.same(opened, ['connect'])
})

t.test('join while bound to another room leaves the old room first', async (t) => {
  const { make, rest } = await setup(t)
  const first = (await rest.getRoom()).roomId
  const second = (await rest.getRoom()).roomId
  const a = make()
  const b = make()
  const c = make()
  await Promise.all([connected(a), connected(b), connected(c)])
  await join(a, first)
  await join(b, first)
  await join(c, second)
  const gone: string[] = []
  b.on('peer-disconnected', ({ peerId }) => gone.push(peerId))
  const readies: string[] = []
  b.on('ready', ({ peerId }) => readies.push(peerId))
  const inSecond = next(c, 'ready')

  // A same-room rejoin sends no leave: b sees ready again, no disconnect.
  t.equal((await join(a, first)).success, true)
  await roundTrip(b)
  t.same(readies, [a.id])
  t.same(gone, [])

  const res = await join(a, second)
  t.same(res, { success: true, message: 'Successfully joined room', roomId: second, peerId: a.id, peers: [c.id] }, 'the join succeeds')
  await roundTrip(b)
  t.same(gone, [a.id], 'the other member of the old room got peer-disconnected')
  t.same((await inSecond)[0], { peerId: a.id })

  const leaves: Array<{ success: boolean, roomId: string }> = []
  a.on('leaveResponse', (r) => leaves.push({ success: r.success, roomId: r.roomId }))
  // Two joins in a row (no reply awaited in between) still leave what the first bound.
  const leftSecond = next(c, 'peer-disconnected')
  a.emit('join', { roomId: first })
  t.equal((await join(a, second)).success, true)
  t.same((await leftSecond)[0], { peerId: a.id })
  await roundTrip(b)
  t.same(gone, [a.id, a.id], 'the room joined in between was left too')

  t.same(leaves, [{ success: true, roomId: second }, { success: true, roomId: first }])

  // A refused join binds nothing: the next join leaves no room it never entered.
  t.equal((await join(a, 'no-such-room')).success, false)
  t.same(leaves.length, 3, 'second was left before the refused join')
  t.equal((await join(a, first)).success, true)
  t.same(leaves, [{ success: true, roomId: second }, { success: true, roomId: first }, { success: true, roomId: second }], 'no leave before the join after a refusal')
})

t.test('the built bundle is ESM with no imports and is exported as ./socket.io', async (t) => {
  const code = readFileSync('dist/client/socket-io.mjs', 'utf8')
  t.notMatch(code, /^\s*import\s/m, 'no imports')
  t.notMatch(code, /require\(/, 'no require')
  const bundle = '../dist/client/socket-io.mjs' // built file, not a typed module
  const mod = await import(bundle) as Record<string, unknown>
  t.type(mod['io'], 'function')
  t.equal(mod['default'], mod['io'])
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { exports: Record<string, { default: string, types: string }> }
  t.equal(pkg.exports['./socket.io']?.default, './dist/client/socket-io.mjs')
  t.ok(readFileSync(pkg.exports['./socket.io']?.types ?? '', 'utf8').includes('export declare function io'), 'types published')
})
