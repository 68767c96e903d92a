import type { IncomingMessage } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t, { type Test } from 'tap'
import { buildTestApp, serveApp, STORE_MODES, storeTime, until } from './helper'
import { connect, joinRoom, listen, quietly, refusedWith, TestClient } from './helpers/ws'
import type { EnvSource } from '../src/config'

const OFFER = { type: 'offer', sdp: 'v=0\r\n' }

for (const mode of STORE_MODES) {
  t.test(`/ws lifecycle on the ${mode} store`, async (t) => {
    const setup = (t: Test, env: EnvSource = {}) => serveApp(t, mode, env)

    t.test('a dropped peer resumes inside the grace: same id, same room, missed messages, nobody told', async (t) => {
      const { app, ws } = await setup(t, { RESUME_GRACE_MS: '5000' })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'res', a, b)
      const oldToken = b.token
      b.drop()
      t.ok(await until(() => app.signaling.stats().connections === 1), 'the server saw the drop')
      a.send('offer', { peerId: b.peerId, offer: OFFER })
      a.send('ice-candidate', { peerId: b.peerId, candidate: null })
      // A direct reply sent after them: a refusal of either would arrive first.
      await a.request('ping', {}, 'pong')
      t.equal(a.all('error').length, 0, 'messages to a held peer are accepted')

      const b2 = await connect(t, `${ws}?resume=${encodeURIComponent(oldToken)}`)
      t.equal(b2.peerId, b.peerId, 'same identity')
      t.not(b2.token, oldToken, 'token rotated')
      a.send('answer', { peerId: b2.peerId, answer: { type: 'answer', sdp: 'x' } })
      t.equal((await b2.next('answer')).data.from, a.peerId, 'relay works after resume')
      // The answer left a after the resume: whatever was held for b2 is in before it.
      t.same(b2.inbox.slice(1).map(f => f.type), ['offer', 'ice-candidate', 'answer'], 'missed messages right after welcome, in order, then the new one')
      t.equal(b2.inbox[1]?.data.from, a.peerId)
      b2.send('initiator-online', { roomId: 'res' })
      await a.next('initiator-online')
      t.equal(a.all('peer-disconnected').length, 0, 'nobody saw a disconnect')

      const stale = await connect(t, `${ws}?resume=${encodeURIComponent(oldToken)}`)
      t.not(stale.peerId, b.peerId, 'a used token gives a fresh identity')
      const garbage = await connect(t, `${ws}?resume=not-a-token`)
      t.ok(garbage.peerId, 'an unknown token gives a fresh identity, not an error')
    })

    t.test('after the grace the room hears peer-disconnected and the token is dead', async (t) => {
      const graceMs = 300
      const { app, ws } = await setup(t, { RESUME_GRACE_MS: String(graceMs) })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'gr', a, b)
      const dropped = performance.now()
      b.drop()
      t.same((await a.next('peer-disconnected', 2000)).data, { peerId: b.peerId })
      // The grace starts once the server sees the drop, after `dropped`: an earlier notice was not held.
      const heard = performance.now() - dropped
      t.ok(heard >= graceMs - 10, `held during the grace: the room heard after ${Math.round(heard)} ms`)
      const late = await connect(t, `${ws}?resume=${encodeURIComponent(b.token)}`)
      t.not(late.peerId, b.peerId)
      t.same((await a.request('join', { roomId: 'gr' }, 'joinResponse')).data.peers, [], 'no ghost member')
    })

    t.test('a held peer still counts as a member (peers, capacity)', async (t) => {
      const { app, ws } = await setup(t, { RESUME_GRACE_MS: '5000', ROOM_MAX_PEERS: '2' })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'held', a, b)
      b.drop()
      t.ok(await until(() => app.signaling.stats().connections === 1), 'the server saw the drop')
      const c = await connect(t, ws)
      t.equal((await c.request('join', { roomId: 'held' }, 'joinResponse')).data.code, 'room_full', 'the held peer keeps its place')
      t.same((await a.request('join', { roomId: 'held' }, 'joinResponse')).data.peers, [b.peerId], 'and is listed')
    })

    t.test('resume takes over a half-open connection, which is closed with 4000 "replaced"', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'take', a, b)
      const b2 = await connect(t, `${ws}?resume=${encodeURIComponent(b.token)}`)
      t.equal(b2.peerId, b.peerId)
      t.same(await b.closed, { code: 4000, reason: 'replaced' })
      a.send('offer', { peerId: b.peerId, offer: OFFER })
      t.equal((await b2.next('offer')).data.from, a.peerId, 'messages go to the new connection')
      t.ok(await until(() => app.signaling.stats().connections === 2), 'the server is done with the replaced connection')
      // Then b's session announces itself again, through the store like an end of the
      // session would go: a disconnect of it would reach a before this ready.
      t.equal((await b2.request('join', { roomId: 'take' }, 'joinResponse')).data.success, true, 'b rejoins')
      t.ok(await until(() => a.all('ready').length === 2), 'a hears b\'s rejoin')
      t.equal(a.all('peer-disconnected').length, 0, 'nobody saw a disconnect')
    })

    t.test('heartbeat terminates a client that stops answering pings', async (t) => {
      const { app, ws } = await setup(t, { HEARTBEAT_MS: '100', RESUME_GRACE_MS: '200' })
      const a = await connect(t, ws)
      const silent = await connect(t, ws, { autoPong: false })
      await joinRoom(app, 'hb', a, silent)
      const closed = await silent.closed
      t.equal(closed.code, 1006, 'terminated without a close handshake')
      t.same((await a.next('peer-disconnected', 2000)).data, { peerId: silent.peerId }, 'gone after the grace')
      t.equal(a.ws.readyState, a.ws.OPEN, 'a client answering pings is kept')
    })

    t.test('a frame over MAX_MESSAGE_BYTES closes with 1009; the peer leaves at once', async (t) => {
      const { app, ws } = await setup(t, { MAX_MESSAGE_BYTES: '2048', RESUME_GRACE_MS: '60000' })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'big', a, b)
      b.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'x'.repeat(4096) } })
      t.equal((await b.closed).code, 1009)
      t.same((await a.next('peer-disconnected', 2000)).data, { peerId: b.peerId })
      t.equal(a.all('offer').length, 0, 'nothing of it was relayed')
    })

    t.test('a flood is rate limited, then closed with 1008; the server stays healthy', async (t) => {
      const { app, ws, http } = await setup(t, { WS_RATE_PER_S: '10', WS_RATE_BURST: '20', WS_ABUSE_MAX_DROPS: '50' })
      const victim = await connect(t, ws)
      const flooder = await connect(t, ws)
      await joinRoom(app, 'flood', victim, flooder)
      for (let i = 0; i < 500; i++) flooder.send('ice-candidate', { peerId: victim.peerId, candidate: null })
      t.equal((await flooder.closed).code, 1008)
      // Sent to the victim after everything of the flooder's that it relayed.
      t.same((await victim.next('peer-disconnected')).data, { peerId: flooder.peerId })
      const limited = flooder.all('error').filter(f => f.data.code === 'rate_limited')
      t.ok(limited.length > 0, `rate_limited errors before the close (${limited.length})`)
      t.ok(victim.all('ice-candidate').length <= 25, `the victim got at most the burst (${victim.all('ice-candidate').length})`)
      t.equal((await fetch(`${http}/health`)).status, 200)
      const fresh = await connect(t, ws)
      t.same((await fresh.request('ping', {}, 'pong')).data, {}, 'others are still served')
    })

    t.test('random and mutated frames never crash the server or reach other peers', async (t) => {
      const { app, ws, http } = await setup(t, { WS_RATE_PER_S: '100000', WS_RATE_BURST: '100000' })
      const fuzzer = await connect(t, ws)
      const partner = await connect(t, ws)
      const bystander = await connect(t, ws)
      const other = await connect(t, ws)
      await joinRoom(app, 'fuzz', fuzzer, partner)
      await joinRoom(app, 'quiet', bystander, other)

      let seed = 42
      const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }
      const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T
      const keys = ['type', 'data', 'id', '__proto__', 'constructor', 'prototype', 'peerId', 'roomId', 'from', 'offer', 'answer', 'candidate', 'sdp']
      const values = (): unknown => pick<() => unknown>([
        () => null, () => true, () => 0, () => -1.5, () => 1e308, () => '', () => 'x'.repeat(Math.floor(rand() * 3000)),
        () => pick(['join', 'leave', 'offer', 'answer', 'ice-candidate', 'ping', 'initiator-online', 'recipient-ready', '__proto__']),
        () => bystander.peerId, () => partner.peerId, () => 'quiet', () => 'fuzz', () => [], () => ({}),
        () => ({ __proto__: { polluted: true } }), () => JSON.parse('{"__proto__":{"polluted":true}}'),
        () => ({ type: 'offer', sdp: 'v=0' }), () => ({ constructor: { prototype: { polluted: true } } })
      ])()
      const randomObject = (depth: number): Record<string, unknown> => {
        const o: Record<string, unknown> = {}
        const n = Math.floor(rand() * 5)
        for (let i = 0; i < n; i++) o[pick(keys)] = depth > 0 && rand() < 0.3 ? randomObject(depth - 1) : values()
        return o
      }
      const valid = [
        { type: 'offer', data: { peerId: partner.peerId, offer: { type: 'offer', sdp: 'v=0' } } },
        { type: 'offer', data: { peerId: bystander.peerId, offer: { type: 'offer', sdp: 'v=0' } } },
        { type: 'ice-candidate', data: { peerId: bystander.peerId, candidate: null } },
        { type: 'join', data: { roomId: 'quiet' } },
        { type: 'initiator-online', data: { roomId: 'quiet' } },
        { type: 'recipient-ready', data: { roomId: 'quiet' } }
      ]
      const frames: Array<string | Buffer> = []
      for (let i = 0; i < 3000; i++) {
        const r = rand()
        if (r < 0.25) {
          frames.push(Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256))))
        } else if (r < 0.5) {
          const text = JSON.stringify(pick(valid))
          const at = Math.floor(rand() * text.length)
          frames.push(text.slice(0, at) + String.fromCharCode(Math.floor(rand() * 128)) + text.slice(at + 1))
        } else if (r < 0.75) {
          const base = structuredClone(pick(valid)) as Record<string, any>
          base[pick(['data', 'type', 'id', '__proto__'])] = values()
          if (typeof base['data'] === 'object' && base['data'] !== null) base['data'][pick(keys)] = values()
          frames.push(JSON.stringify(base))
        } else {
          frames.push(JSON.stringify(randomObject(3)))
        }
      }
      for (const f of frames) {
        if (typeof f !== 'string') fuzzer.ws.send(f, { binary: true })
        else fuzzer.ws.send(f)
      }
      await fuzzer.request('ping', {}, 'pong')
      t.equal(fuzzer.ws.readyState, fuzzer.ws.OPEN, 'the fuzzing connection itself survived every error')
      t.equal(({} as Record<string, unknown>)['polluted'], undefined, 'Object.prototype not polluted')
      // The fuzzer's pong came after all its frames were handled, so everything they
      // sent to a peer was written before that peer's own pong.
      const markers = [await bystander.request('ping', {}, 'pong'), await other.request('ping', {}, 'pong'), await partner.request('ping', {}, 'pong')]
      const leaked = [...bystander.inbox.slice(1), ...other.inbox.slice(1)].filter(f => f.type !== 'ready' && f.type !== 'joinResponse' && !markers.includes(f))
      t.same(leaked, [], 'peers in another room received nothing')
      const relayed = partner.inbox.slice(1).filter(f => ['offer', 'answer', 'ice-candidate', 'recipient-ready'].includes(f.type))
      t.ok(relayed.length > 0, `the partner got relays and broadcasts (${relayed.length})`)
      t.same(relayed.filter(f => (f.data.from ?? f.data.peerId) !== fuzzer.peerId), [], 'each of them from the fuzzer')
      t.equal((await fetch(`${http}/health`)).status, 200, 'server healthy')
      t.equal((await partner.request('ping', {}, 'pong')).type, 'pong')
    })

    t.test('POST /api/leave_room needs the current token', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'beacon', a, b)
      const post = (payload: object) => app.inject({ method: 'POST', url: '/api/leave_room', payload })
      const forged = await post({ roomId: 'beacon', peerId: b.peerId, token: a.token })
      t.equal(forged.statusCode, 403, 'another peer\'s token')
      t.match(forged.json(), { statusCode: 403, error: 'Forbidden' })
      t.equal((await post({ roomId: 'beacon', peerId: b.peerId, token: `${b.peerId}.wrong` })).statusCode, 403, 'wrong secret')
      t.equal((await post({ roomId: 'beacon', peerId: 'unknownpeer', token: 'x' })).statusCode, 403, 'unknown peer')
      t.equal((await post({ roomId: 'beacon', peerId: b.peerId })).statusCode, 400, 'missing token')
      t.same((await post({ roomId: 'elsewhere', peerId: b.peerId, token: b.token })).json(), { success: false, message: 'Peer is not in that room' })
      // A reply a gets after the refusals: a departure they set off would be in before it.
      await a.request('ping', {}, 'pong')
      t.equal(a.all('peer-disconnected').length, 0, 'refused requests changed nothing')
      t.same((await post({ roomId: 'beacon', peerId: b.peerId, token: b.token })).json(), { success: true, message: 'Successfully left the room' })
      t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId })
    })

    t.test('an occupied room never expires; an emptied one expires after ROOM_EMPTY_TTL_S', async (t) => {
      const time = storeTime(mode)
      const { app, ws } = await serveApp(t, mode, { ROOM_TTL_S: '1', ROOM_EMPTY_TTL_S: '1' }, { memoryStoreNow: time.now })
      const a = await connect(t, ws)
      await joinRoom(app, 'live', a)
      const available = async () => (await app.inject({ method: 'POST', url: '/api/check_room', payload: { roomId: 'live' } })).json().available
      // A real wait on both stores: what keeps the room alive is the server's
      // refresh timer, which runs on the wall clock.
      await quietly(2500)
      t.equal(await available(), false, 'alive 2.5 s into a 1 s TTL while occupied')
      await a.close()
      // The room leaves this instance once the store has the peer's departure (and the empty TTL).
      t.ok(await until(() => app.signaling.stats().rooms === 0), 'the server saw the room empty')
      t.equal(await available(), false, 'kept for the empty TTL')
      await time.elapse(1200)
      t.equal(await available(), true, 'expired after it')
    })

    t.test('metrics count connections, messages, errors and relays', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'met', a, b)
      a.send('offer', { peerId: b.peerId, offer: OFFER })
      await b.next('offer')
      await a.request('fly', {}, 'error')
      const text = (await app.inject('/metrics')).body
      t.match(text, /privydrop_ws_connections 2/)
      t.match(text, /privydrop_rooms_active 1/)
      t.match(text, /privydrop_ws_messages_in_total\{type="offer"\} 1/)
      t.match(text, /privydrop_ws_messages_out_total\{type="offer"\} 1/)
      t.match(text, /privydrop_ws_errors_total\{code="unknown_type"\} 1/)
      t.match(text, /privydrop_relay_latency_seconds_count\{path="local"\} 1/)
    })
  })
}

t.test('Origin allow-list: other origins get 403 before the upgrade', async (t) => {
  const app = await buildTestApp(t, { CORS_ORIGIN: 'https://privydrop.app,https://www.privydrop.app' })
  const { ws } = await listen(t, app)
  t.equal(await refusedWith(new TestClient(ws, { origin: 'https://evil.example' })), 403)
  const good = await connect(t, ws, { origin: 'https://www.privydrop.app' })
  t.ok(good.peerId, 'an allowed origin connects')
  const none = await connect(t, ws)
  t.ok(none.peerId, 'a client without Origin (not a browser) connects')
})

t.test('MAX_CONNECTIONS_PER_IP refuses further upgrades with 429', async (t) => {
  const app = await buildTestApp(t, { MAX_CONNECTIONS_PER_IP: '2' })
  const { ws } = await listen(t, app)
  const a = await connect(t, ws)
  await connect(t, ws)
  t.equal(await refusedWith(new TestClient(ws)), 429)
  await a.close()
  t.ok(await until(() => app.signaling.stats().connections === 1), 'the server saw the close')
  t.ok((await connect(t, ws)).peerId, 'a slot frees up when a connection closes')
})

t.test('a slow reader: bounded buffering, the excess refused to its sender, everything accepted delivered once it reads', async (t) => {
  const app = await buildTestApp(t, { WS_MAX_BUFFERED_BYTES: '65536', RESUME_BUFFER_MAX: '16', WS_RATE_PER_S: '100000', WS_RATE_BURST: '100000' })
  const { ws } = await listen(t, app)
  const sender = await connect(t, ws)
  const slow = await connect(t, ws)
  await joinRoom(app, 'slow', sender, slow)
  const socket = (slow.ws as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
  socket.pause() // stops reading: the kernel buffers fill, then the server's
  const sdp = 'x'.repeat(60_000)
  // Until the server refuses some: the socket, then the 16-frame buffer, are full.
  let sent = 0
  while (sender.all('error').length === 0 && sent < 2000) {
    for (let i = 0; i < 20; i++, sent++) sender.send('offer', { peerId: slow.peerId, offer: { type: 'offer', sdp: `${sent} ${sdp}` } }, `o${sent}`)
    await quietly(20)
  }
  // A marker behind everything sent: once it is answered, every offer before it has been decided.
  const marker = await sender.request('ping', {}, 'pong')
  t.equal(marker.type, 'pong')
  const refused = sender.all('error')
  t.ok(refused.length > 0 && refused.every(f => f.data.code === 'peer_not_found'), `the excess is refused with peer_not_found (${refused.length} of ${sent})`)
  t.equal(app.signaling.stats().connections, 2, 'the slow connection is kept')
  const refusedIds = new Set(refused.map(f => f.id))
  const accepted = Array.from({ length: sent }, (_, i) => `o${i}`).filter(id => !refusedIds.has(id)).map(id => Number(id.slice(1)))

  socket.resume()
  t.ok(await until(() => slow.all('offer').length >= accepted.length, 15_000), 'every accepted offer arrives once it reads')
  t.same(slow.all('offer').map(f => Number(f.data.offer.sdp.split(' ', 1)[0])), accepted, 'in order, exactly the accepted ones')
})

t.test('app.close() closes every socket with 1001 promptly', async (t) => {
  const app = await buildTestApp(t)
  const { ws } = await listen(t, app)
  const a = await connect(t, ws)
  const b = await connect(t, ws)
  await joinRoom(app, 'bye', a, b)
  const started = Date.now()
  await app.close()
  t.equal((await a.closed).code, 1001)
  t.equal((await b.closed).code, 1001)
  t.ok(Date.now() - started < 5000, 'close did not hang')
})

t.test('an open connection keeps nothing of its upgrade: the request, its response and Fastify\'s request/reply are collectable', async (t) => {
  // KiBs per idle connection otherwise (@fastify/websocket leaves the upgrade's
  // ServerResponse on the socket, and it holds the rest).
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const app = await buildTestApp(t)
  const { ws } = await listen(t, app)
  const upgrades: Array<WeakRef<object>> = []
  app.server.on('upgrade', (req: IncomingMessage) => { upgrades.push(new WeakRef(req)) })
  const a = await connect(t, ws)
  const b = await connect(t, ws)
  await joinRoom(app, 'lean', a, b)
  t.equal(upgrades.length, 2)
  t.ok(await until(() => {
    gc()
    return upgrades.every(ref => ref.deref() === undefined)
  }, 2000), 'both upgrade requests were collected while their connections stay open')
  a.send('offer', { peerId: b.peerId, offer: OFFER })
  t.equal((await b.next('offer')).data.from, a.peerId, 'and the connections still work')
})
