import t from 'tap'
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import { createRestClient, RestError, SignalingClient, SignalingError, type SignalingErrorEvent, type WebSocketConstructor, type SignalingClientOptions } from '../src/client'
import { serveApp, sleep, until } from './helper'
import { connect, standInServer, standInWelcome } from './helpers/ws'
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

t.test('every send has an id; a refusal names it, on the error event and on that send\'s onRefused; success is silence', async (t) => {
  const { make, rest } = await setup(t)
  const { roomId } = await rest.getRoom()
  const a = make()
  const b = make()
  await a.connect()
  await b.connect()
  const errors: SignalingErrorEvent[] = []
  a.on('error', (e) => errors.push(e))
  const refused: Array<{ which: string, err: SignalingErrorEvent }> = []
  const onRefused = (which: string) => (err: SignalingErrorEvent) => refused.push({ which, err })

  // Outside a room every relay is refused; the ids are the client's own.
  const first = a.offer(b.peerId ?? '', { type: 'offer', sdp: 'v=0' }, { onRefused: onRefused('offer') })
  const second = a.iceCandidate(b.peerId ?? '', null)
  t.match(first, /^c-\d+$/, 'an id is assigned')
  t.not(first, second, 'a new id per send')
  t.equal(a.send('answer', { peerId: 'nobody', answer: { type: 'answer', sdp: 'v=0' } }, 'my-id'), 'my-id', 'a positional id is kept')
  t.equal(a.send('answer', { peerId: 'nobody', answer: { type: 'answer', sdp: 'v=0' } }, { id: 'my-other-id', onRefused: onRefused('answer') }), 'my-other-id')
  const online = a.initiatorOnline(roomId, { onRefused: onRefused('online') })
  await a.ping()
  const message = 'Target peer not found in your room'
  t.same(errors, [
    { code: 'peer_not_found', message, type: 'offer', id: first },
    { code: 'peer_not_found', message, type: 'ice-candidate', id: second },
    { code: 'peer_not_found', message, type: 'answer', id: 'my-id' },
    { code: 'peer_not_found', message, type: 'answer', id: 'my-other-id' },
    { code: 'not_in_room', message: errors[4]?.message, type: 'initiator-online', id: online }
  ], 'every error carries the refused message\'s id')
  t.same(refused.map(r => [r.which, r.err.code, r.err.id]), [
    ['offer', 'peer_not_found', first],
    ['answer', 'peer_not_found', 'my-other-id'],
    ['online', 'not_in_room', online]
  ], 'onRefused: once, for its own message')
  t.equal(refused[0]?.err, errors[0], 'the same object as the error event')

  // In the room the relays are accepted: no reply, no callback.
  await a.join(roomId)
  await b.join(roomId)
  const got = new Promise(resolve => b.once('offer', resolve))
  a.offer(b.peerId ?? '', { type: 'offer', sdp: 'v=0' }, { onRefused: onRefused('accepted') })
  a.initiatorOnline(roomId, { onRefused: onRefused('accepted') })
  await got
  await a.ping()
  t.equal(errors.length, 5, 'no error for accepted messages')
  t.equal(refused.length, 3, 'no callback for accepted messages')

  // The target leaves: a relay to it is refused, and the app hears which one.
  await b.leave(roomId)
  const gone = new Promise<SignalingErrorEvent>(resolve => a.offer(b.peerId ?? '', { type: 'offer', sdp: 'v=1' }, { onRefused: resolve }))
  t.match(await Promise.race([gone, sleep(3000).then(() => 'no refusal within 3 s')]), { code: 'peer_not_found', type: 'offer' })
})

t.test('onRefused callbacks are bounded: the oldest beyond maxRefusalCallbacks, and those older than refusalCallbackTtlMs, are forgotten', async (t) => {
  const { make, rest } = await setup(t)
  const { roomId } = await rest.getRoom()
  const refusals = (c: SignalingClient) => (c as unknown as { refusals: Map<string, unknown> }).refusals
  const a = make({ maxRefusalCallbacks: 3, refusalCallbackTtlMs: 300 })
  const b = make()
  await a.connect()
  await b.connect()
  await a.join(roomId)
  await b.join(roomId)
  // Accepted relays are never answered: their callbacks would stay forever without the bounds.
  const ids = Array.from({ length: 10 }, (_, i) => a.iceCandidate(b.peerId ?? '', { candidate: `candidate:${i}` }, { onRefused: () => {} }))
  t.same([...refusals(a).keys()], ids.slice(-3), 'the newest 3 are kept')
  await sleep(400)
  a.iceCandidate(b.peerId ?? '', null, { onRefused: () => {} })
  t.equal(refusals(a).size, 1, 'expired ones are forgotten')

  // A forgotten callback is not called; the error event still names the message.
  const forgotten: string[] = []
  const errors: Array<string | undefined> = []
  a.on('error', (e) => errors.push(e.id))
  await a.leave(roomId)
  const sent = Array.from({ length: 4 }, () => a.offer(b.peerId ?? '', { type: 'offer', sdp: 'v=0' }, { onRefused: (e) => forgotten.push(e.id) }))
  await a.ping()
  t.same(errors, sent)
  t.same(forgotten, sent.slice(-3), 'the oldest was over the cap')

  // Queued while disconnected: the lifetime counts from the write, not from the send.
  const c = make({ refusalCallbackTtlMs: 200 })
  const queued = new Promise<SignalingErrorEvent>(resolve => c.offer('nobody', { type: 'offer', sdp: 'v=0' }, { onRefused: resolve }))
  await sleep(300)
  await c.connect()
  t.match(await Promise.race([queued, sleep(3000).then(() => 'no refusal within 3 s')]), { code: 'peer_not_found' })
  a.close()
  t.equal(refusals(a).size, 0, 'close() forgets them all')
})

t.test('a 1012 close (an instance leaving: Redis unreachable) resumes at once with the same identity', async (t) => {
  // A stand-in server: welcomes, then leaves with 1012 after the welcome (live
  // sessions) or before it (an instance refusing new ones).
  const plan: Array<'welcome' | 'welcome-then-1012' | '1012'> = ['welcome-then-1012', '1012', 'welcome-then-1012', 'welcome']
  const { port, urls } = await standInServer(t, (sock, _url, attempt) => {
    const step = plan[attempt - 1] ?? 'welcome'
    if (step === '1012') {
      sock.close(1012, 'instance leaving: redis unreachable')
      return
    }
    standInWelcome(sock, attempt)
    if (step === 'welcome-then-1012') setTimeout(() => sock.close(1012, 'instance leaving: redis unreachable'), 20)
  })
  const url = `ws://127.0.0.1:${port}/ws`
  const initialDelayMs = 100
  const c = new SignalingClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor, reconnect: { initialDelayMs, maxDelayMs: 30_000, factor: 10, jitter: 0.5 } })
  t.teardown(() => c.close())
  const events: string[] = []
  const delays: number[] = []
  c.on('close', (e) => events.push(`close:${e.code}:${e.reason}:${String(e.willReconnect)}`))
  c.on('reconnecting', (e) => delays.push(e.delayMs))
  c.on('open', (e) => events.push(`open:${String(e.resumed)}:${e.peerId}`))
  await c.connect()
  t.ok(await until(() => urls.length === 4 && c.state === 'open', 3000), 'back in well under the backoff a 1012 before the welcome adds')
  t.same(events, [
    'open:false:peer-1',
    'close:1012:instance leaving: redis unreachable:true',
    'close:1012:instance leaving: redis unreachable:true',
    'open:true:peer-1',
    'close:1012:instance leaving: redis unreachable:true',
    'open:true:peer-1'
  ])
  t.same(urls, ['/ws', '/ws?resume=token-1', '/ws?resume=token-1', '/ws?resume=token-3'], 'each attempt resumes with the latest token')
  t.equal(delays.length, 3)
  t.ok((delays[0] ?? Infinity) <= initialDelayMs && (delays[2] ?? Infinity) <= initialDelayMs, `a live session resumes within initialDelayMs (${delays.join(', ')})`)
  t.ok((delays[1] ?? 0) > initialDelayMs, 'a 1012 before any welcome backs off as usual')
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
