import t from 'tap'
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import { createRestClient, RestError, SignalingClient, SignalingError, type WebSocketConstructor, type SignalingClientOptions } from '../src/client'
import { serveApp, until } from './helper'
import { connect } from './helpers/ws'
import type { EnvSource } from '../src/config'

type Teardown = { teardown: (fn: () => unknown) => void }

async function setup (t: Teardown, env: EnvSource = {}) {
  const served = await serveApp(t, 'memory', env)
  const make = (opts: Partial<SignalingClientOptions> = {}) => {
    const client = new SignalingClient({ url: served.ws, WebSocket: WebSocket as unknown as WebSocketConstructor, requestTimeoutMs: 2000, ...opts })
    t.teardown(() => client.close())
    return client
  }
  return { ...served, make, rest: createRestClient(served.http) }
}

t.test('connect, typed events, join/leave/ping as requests', async (t) => {
  const { make, rest } = await setup(t)
  const { roomId } = await rest.getRoom()
  const a = make()
  const b = make()
  const opened = await a.connect()
  t.equal(opened.resumed, false)
  t.equal(a.peerId, opened.peerId)
  t.equal(a.state, 'open')
  t.same(a.iceServers, [{ urls: ['stun:stun.l.google.com:19302'] }])
  await b.connect()

  const joined = await a.join(roomId)
  t.same(joined.peers, [])
  const readies: string[] = []
  const off = a.on('ready', (data) => readies.push(data.peerId))
  const offers: Array<{ from: string, sdp?: string }> = []
  a.on('offer', (data) => offers.push({ from: data.from, sdp: data.offer.sdp }))
  t.same((await b.join(roomId)).peers, [a.peerId])
  b.offer(a.peerId ?? '', { type: 'offer', sdp: 'v=0' })
  t.ok(await until(() => offers.length === 1))
  t.same(offers, [{ from: b.peerId, sdp: 'v=0' }])
  t.same(readies, [b.peerId])
  off()
  // A listener still subscribed shows when the re-announced ready is in.
  const again = new Promise(resolve => a.once('ready', resolve))
  await b.join(roomId) // rejoin re-announces ready, but we unsubscribed
  await again
  t.same(readies, [b.peerId], 'off() unsubscribes')

  let onceCount = 0
  let everyCount = 0
  a.once('initiator-online', () => { onceCount++ })
  a.on('initiator-online', () => { everyCount++ })
  b.initiatorOnline(roomId)
  b.initiatorOnline(roomId)
  t.ok(await until(() => everyCount === 2), 'both arrived')
  t.equal(onceCount, 1, 'once fires once')

  t.same(await a.ping(), {})
  t.same(await b.leave(roomId), { success: true, roomId })
  await t.rejects(a.join('no-such-room'), new SignalingError('already_in_room', 'Socket is already bound to another room'))
  await a.leave(roomId)
  const err = await a.join('no-such-room').catch((e: unknown) => e)
  t.ok(err instanceof SignalingError)
  t.equal((err as SignalingError).code, 'room_not_found')
})

t.test('a request with no reply times out; an error frame rejects with its code', async (t) => {
  const { make } = await setup(t)
  const a = make({ requestTimeoutMs: 300 })
  await a.connect()
  const invalid = await a.request('join', { roomId: 'bad:id' } as never).catch((e: unknown) => e)
  t.equal((invalid as SignalingError).code, 'invalid_message')
  const silent = await a.request('initiator-online', { roomId: 'x' }).catch((e: unknown) => e)
  t.equal((silent as SignalingError).code, 'not_in_room', 'errors carry the id back')
  const b = make()
  await b.connect()
  const { roomId } = await createRestClient((a as any).opts.url.replace('ws://', 'http://').replace('/ws', '')).getRoom()
  await a.join(roomId)
  await b.join(roomId)
  const started = Date.now()
  const timeout = await a.request('offer', { peerId: b.peerId ?? '', offer: { type: 'offer', sdp: 'x' } }).catch((e: unknown) => e)
  t.equal((timeout as SignalingError).code, 'timeout', 'a relay has no reply: the request times out')
  t.ok(Date.now() - started >= 250)
})

t.test('sends queue while disconnected and flush after the resume; identity survives', async (t) => {
  const { make, rest } = await setup(t, { RESUME_GRACE_MS: '5000' })
  const { roomId } = await rest.getRoom()
  const a = make({ reconnect: { initialDelayMs: 200, maxDelayMs: 200, jitter: 0 } })
  const b = make()
  await a.connect()
  await b.connect()
  await a.join(roomId)
  await b.join(roomId)
  const firstId = a.peerId
  const got: string[] = []
  b.on('ice-candidate', (data) => got.push(data.candidate?.candidate ?? 'end'))
  const events: string[] = []
  a.on('close', (e) => events.push(`close:${e.code}:${String(e.willReconnect)}`))
  a.on('reconnecting', () => events.push('reconnecting'))
  // What b has when a is back: the queue goes out only then, so nothing yet.
  const reopened = new Promise<{ resumed: boolean, gotBefore: string[] }>(resolve => a.once('open', (e) => resolve({ resumed: e.resumed, gotBefore: [...got] })))

  a.reconnectNow()
  t.equal(a.state, 'reconnecting')
  for (let i = 0; i < 5; i++) a.iceCandidate(b.peerId ?? '', { candidate: `candidate:${i}` })
  const { resumed, gotBefore } = await reopened
  t.same(gotBefore, [], 'nothing sent while disconnected')
  t.equal(resumed, true)
  t.equal(a.peerId, firstId, 'same peerId after the reconnect')
  // Sent after the queue on the same path: once it is in, so is every queued message.
  const marker = new Promise(resolve => b.once('offer', resolve))
  a.offer(b.peerId ?? '', { type: 'offer', sdp: 'v=0' })
  await marker
  t.same(got, ['candidate:0', 'candidate:1', 'candidate:2', 'candidate:3', 'candidate:4'], 'queued messages delivered after the resume, in order, once')
  t.same(events, ['close:4001:true', 'reconnecting'])
})

t.test('a dead link is noticed by the app-level ping and healed by a resume', async (t) => {
  const { make, rest } = await setup(t, { RESUME_GRACE_MS: '5000' })
  const a = make({ pingIntervalMs: 100, pingTimeoutMs: 200, reconnect: { initialDelayMs: 50, maxDelayMs: 50, jitter: 0 } })
  await a.connect()
  // Only a peer in a room is held for resume (a session with no room has nothing to resume).
  await a.join((await rest.getRoom()).roomId)
  const firstId = a.peerId
  const reopened = new Promise<{ resumed: boolean }>(resolve => a.once('open', resolve))
  const closed = new Promise<{ code: number }>(resolve => a.once('close', resolve))
  // Stop reading from the socket: pongs never arrive, as on a dead network path.
  ;((a as unknown as { ws: { _socket: { pause: () => void } } }).ws._socket).pause()
  t.equal((await closed).code, 4002, 'ping timeout detected')
  t.equal((await reopened).resumed, true)
  t.equal(a.peerId, firstId)
})

t.test('a new identity after the grace: queue dropped, pending requests rejected, app told to rejoin', async (t) => {
  const { ws, make, rest } = await setup(t, { RESUME_GRACE_MS: '0' })
  const { roomId } = await rest.getRoom()
  const a = make({ reconnect: { initialDelayMs: 300, maxDelayMs: 300, jitter: 0 }, requestTimeoutMs: 5000 })
  await a.connect()
  // Only a peer in a room is held for resume: without one the grace would not matter.
  await a.join(roomId)
  const b = await connect(t, ws)
  await b.request('join', { roomId }, 'joinResponse')
  const firstId = a.peerId
  const errors: string[] = []
  a.on('error', (e) => errors.push(e.code))
  const reopened = new Promise<{ resumed: boolean }>(resolve => a.once('open', resolve))
  const closed = new Promise(resolve => a.once('close', resolve))
  // A network loss: the TCP connection just goes away (the server sees 1006).
  ;((a as unknown as { ws: { _socket: { destroy: () => void } } }).ws._socket).destroy()
  const pending = a.ping().catch((e: unknown) => e)
  await closed
  a.offer(b.peerId, { type: 'offer', sdp: 'v=0' }) // queued: the client knows it is disconnected
  t.same((await b.next('peer-disconnected')).data, { peerId: firstId }, 'with no grace the server ends the session: the room hears it')
  t.equal((await reopened).resumed, false)
  t.not(a.peerId, firstId)
  t.equal((await pending as SignalingError).code, 'session_lost')
  // A reply after anything the old queue would have sent (a relay from outside a room is refused).
  await a.ping()
  t.same(errors, [], 'the old session\'s queue was dropped')
})

t.test('a server shutdown (1001) triggers reconnects; close() stops them', async (t) => {
  const { app, make } = await setup(t)
  // Counts the sockets each client opens: one per connection attempt.
  const attempts = { a: 0, control: 0 }
  const counting = (who: keyof typeof attempts) => class extends WebSocket {
    constructor (url: string) {
      super(url)
      attempts[who]++
    }
  } as unknown as WebSocketConstructor
  const reconnect = { initialDelayMs: 50, maxDelayMs: 100, jitter: 0 }
  const a = make({ reconnect, WebSocket: counting('a') })
  // The same schedule, never closed: its attempts show when a's would have come.
  const control = make({ reconnect, WebSocket: counting('control') })
  await a.connect()
  await control.connect()
  const reconnecting = new Promise(resolve => a.once('reconnecting', resolve))
  const closed = new Promise<{ code: number, willReconnect: boolean }>(resolve => a.once('close', resolve))
  await app.close()
  t.same(await closed, { code: 1001, reason: 'server shutting down', willReconnect: true })
  await reconnecting
  a.close()
  t.equal(a.state, 'closed')
  const tried = attempts.a
  const seen = attempts.control
  t.ok(await until(() => attempts.control >= seen + 3), 'the other client keeps trying')
  t.equal(attempts.a, tried, 'no attempt after close()')
})

t.test('REST helpers', async (t) => {
  const { rest, ws } = await setup(t)
  const { roomId } = await rest.getRoom()
  t.match(roomId, /^\d{4}$/)
  t.same(await rest.checkRoom(roomId), { available: false })
  t.same(await rest.createRoom('client-room-1'), { success: true, message: 'create room success' })
  t.same((await rest.iceServers()).iceServers, [{ urls: ['stun:stun.l.google.com:19302'] }])
  t.same(await rest.track('docs'), { success: true })
  const bad = await rest.createRoom('bad id').catch((e: unknown) => e)
  t.ok(bad instanceof RestError)
  t.equal((bad as RestError).status, 400)

  const peer = await connect(t, ws)
  await peer.request('join', { roomId }, 'joinResponse')
  t.same(await rest.leaveRoom({ roomId, peerId: peer.peerId, token: peer.token }), { success: true, message: 'Successfully left the room' })
  t.equal(((await rest.leaveRoom({ roomId, peerId: peer.peerId, token: 'x.y' }).catch((e: unknown) => e)) as RestError).status, 403)
})

t.test('the built browser bundle is ESM with no runtime dependencies', async (t) => {
  const code = readFileSync('dist/client/index.mjs', 'utf8')
  t.notMatch(code, /^\s*import\s/m, 'no imports')
  t.notMatch(code, /require\(/, 'no require')
  const bundle = '../dist/client/index.mjs' // built file, not a typed module
  const mod = await import(bundle) as Record<string, unknown>
  t.type(mod['SignalingClient'], 'function')
  t.type(mod['createRestClient'], 'function')
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { exports: Record<string, { default: string, types: string }> }
  t.equal(pkg.exports['./client']?.default, './dist/client/index.mjs')
  t.ok(readFileSync(pkg.exports['./client']?.types ?? '', 'utf8').includes('class SignalingClient'), 'types published')
})
