import t, { type Test } from 'tap'
import { FakeCluster, errorsOf, join, offer, offerNumbers, type ClusterOptions, type TestNode } from './helpers/fake-mesh'
import { heartbeatSlices, startHeartbeat } from '../src/signaling/hub'
import { whileAdvancing } from './helpers/fake-time'

/*
 * Unit tests of the signaling core (src/signaling) on one instance:
 * createLocalMesh + createMemoryStore, fake sockets and a fake clock.
 * Everything is asserted as a client sees it: frames, errors, order.
 * Multi-instance behaviour is in test/core-mesh.test.ts.
 */

const sdp = offer
const CANDIDATE = { candidate: 'candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host', sdpMid: '0', sdpMLineIndex: 0 }
const offers = offerNumbers

async function solo (t: Test, opts: ClusterOptions = {}): Promise<{ c: FakeCluster, n: TestNode }> {
  const c = new FakeCluster({ ...opts, local: true })
  t.teardown(() => c.close())
  const n = c.node('solo')
  return { c, n }
}

async function room (n: TestNode, roomId: string): Promise<void> {
  await n.store.createRoom(roomId)
}

t.test('single instance: welcome, join, relay and broadcasts', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const a = c.connect(n)
  const b = c.connect(n)
  t.equal(a.inbox[0]?.type, 'welcome', 'welcome is the first frame')
  t.match(a.welcome?.data, { protocol: 1, heartbeatMs: 25_000, iceServers: [] })
  t.not(a.peerId, b.peerId)
  t.match(a.token, new RegExp(`^${a.peerId}\\.`), 'token names the peer')

  t.same(await join(t, c, a, 'r1'), [])
  t.same(await join(t, c, b, 'r1'), [a.peerId], 'peers lists the others')
  t.same(a.frames('ready').map(f => f.data), [{ peerId: b.peerId }], 'ready to the others')
  t.equal(b.frames('ready').length, 0, 'no ready about oneself')

  b.send('offer', { peerId: a.peerId, offer: sdp(1), from: 'FORGED' }, 'o1')
  a.send('answer', { peerId: b.peerId, answer: { type: 'answer', sdp: 'v=0' } })
  a.send('ice-candidate', { peerId: b.peerId, candidate: CANDIDATE })
  a.send('ice-candidate', { peerId: b.peerId, candidate: null })
  await c.settle()
  t.same(a.frames('offer').map(f => f.data), [{ offer: sdp(1), peerId: b.peerId, from: b.peerId }], 'sender stamped, forged from ignored')
  t.notOk(a.frames('offer')[0]?.id, 'the correlation id stays with the sender')
  t.same(b.frames('answer')[0]?.data, { answer: { type: 'answer', sdp: 'v=0' }, peerId: a.peerId, from: a.peerId })
  t.same(b.frames('ice-candidate').map(f => f.data.candidate), [CANDIDATE, null])

  a.send('initiator-online', { roomId: 'r1' })
  b.send('recipient-ready', { roomId: null })
  b.send('recipient-ready', {})
  a.send('ping', undefined, 'p1')
  await c.settle()
  t.same(b.frames('initiator-online').map(f => f.data), [{ roomId: 'r1' }])
  t.same(a.frames('recipient-ready').map(f => f.data), [{ peerId: b.peerId }, { peerId: b.peerId }])
  t.equal(a.frames('initiator-online').length + b.frames('recipient-ready').length, 0, 'never one\'s own broadcast')
  t.same(a.frames('pong'), [{ type: 'pong', data: {}, id: 'p1' }], 'pong echoes the id')

  t.same(n.hub.stats(), { connections: 2, sessions: 2, rooms: 1, remotes: 0, waiting: 0 })
  t.same(n.hub.occupiedRooms().map(r => ({ roomId: r.roomId, n: r.peerIds.length })), [{ roomId: 'r1', n: 2 }])
  t.equal(n.hub.connectionsFrom('192.0.2.1'), 2)
  t.equal(n.hub.reachable(), true)
  t.ok(n.metrics.count('relayLatency') >= 4, 'relay latency observed')
})

t.test('single instance: the §3.3/§3.4 refusals', async (t) => {
  const { c, n } = await solo(t, { limits: { maxPeers: 2 } })
  await room(n, 'r1')
  await room(n, 'r2')
  const a = c.connect(n)
  const b = c.connect(n)
  const outsider = c.connect(n)
  await join(t, c, a, 'r1')
  await join(t, c, b, 'r2')

  a.send('offer', { peerId: b.peerId, offer: sdp(1) }, 'x1')
  a.send('offer', { peerId: a.peerId, offer: sdp(2) }, 'x2')
  a.send('answer', { peerId: 'nobody', answer: { type: 'answer' } }, 'x3')
  outsider.send('ice-candidate', { peerId: a.peerId, candidate: null }, 'x4')
  a.send('initiator-online', { roomId: 'r2' }, 'x5')
  b.send('recipient-ready', { roomId: 'r1' }, 'x6')
  outsider.send('recipient-ready', {}, 'x7')
  await c.settle()
  t.same(errorsOf(a, 'peer_not_found').map(f => [f.id, f.data.type]), [['x1', 'offer'], ['x2', 'offer'], ['x3', 'answer']], 'across rooms, to oneself, to nobody')
  t.same(errorsOf(outsider, 'peer_not_found').map(f => f.id), ['x4'], 'from outside any room')
  t.same(errorsOf(a, 'not_in_room').map(f => f.id), ['x5'])
  t.same(errorsOf(b, 'not_in_room').map(f => f.id), ['x6'])
  t.same(errorsOf(outsider, 'not_in_room').map(f => f.id), ['x7'])
  t.equal(b.frames('offer').length + a.frames('offer').length, 0, 'nothing delivered')

  // Joins: missing room, already in another room, full room.
  const d = c.connect(n)
  d.send('join', { roomId: 'ghost' }, 'g')
  a.send('join', { roomId: 'r2' }, 'a2')
  await c.settle()
  t.match(d.frames('joinResponse')[0], { id: 'g', data: { success: false, code: 'room_not_found', roomId: 'ghost' } })
  t.match(a.frames('joinResponse').at(-1), { id: 'a2', data: { success: false, code: 'already_in_room', roomId: 'r2' } })
  await join(t, c, outsider, 'r1')
  d.send('join', { roomId: 'r1' }, 'f')
  await c.settle()
  t.match(d.frames('joinResponse').at(-1), { id: 'f', data: { success: false, code: 'room_full' } })

  // Malformed frames.
  a.raw('{nope')
  a.raw('[1]')
  a.send('fly', {}, 'u1')
  a.send('offer', { peerId: b.peerId }, 'm1')
  a.raw(JSON.stringify({ type: 'ping', id: 'bad\nid' }))
  a.raw(Buffer.from('{}'), true)
  await c.settle()
  const codes = a.frames('error').slice(-6).map(f => [f.data.code, f.id ?? null])
  t.same(codes, [['bad_json', null], ['bad_json', null], ['unknown_type', 'u1'], ['invalid_message', 'm1'], ['invalid_message', null], ['bad_json', null]])

  // Leave: not in that room, then for real.
  a.send('leave', { roomId: 'r2' }, 'l0')
  a.send('leave', { roomId: 'r1' }, 'l1')
  await c.settle()
  t.same(a.frames('leaveResponse').map(f => [f.id, f.data]), [['l0', { success: false, roomId: 'r2', code: 'not_in_room' }], ['l1', { success: true, roomId: 'r1' }]])
  t.same(outsider.frames('peer-disconnected').map(f => f.data), [{ peerId: a.peerId }], 'the room hears the leave at once')
  outsider.send('offer', { peerId: a.peerId, offer: sdp(3) }, 'after-leave')
  await c.settle()
  t.same(errorsOf(outsider, 'peer_not_found').map(f => f.id), ['x4', 'after-leave'])
})

t.test('single instance: a same-room rejoin re-announces ready and is not rate limited', async (t) => {
  const { c, n } = await solo(t, { limits: { joinRateLimit: true } })
  await room(n, 'r1')
  const a = c.connect(n)
  const b = c.connect(n)
  await join(t, c, a, 'r1')
  await join(t, c, b, 'r1')
  for (let i = 0; i < 3; i++) t.same(await join(t, c, b, 'r1'), [a.peerId], `rejoin ${i + 1}`)
  t.equal(a.frames('ready').length, 4, 'ready each time')
  const d = c.connect(n)
  d.send('join', { roomId: 'r1' }, 'rl')
  await c.settle()
  t.match(d.frames('joinResponse')[0]?.data, { success: false, code: 'rate_limited', message: /^Rate limit exceeded\. Try again in \d+s\. Attempts left: 0\.$/ })
})

t.test('single instance: message rate limit, then flooding closes with 1008', async (t) => {
  const { c, n } = await solo(t, { limits: { rateBurst: 2, ratePerS: 0.001, abuseMaxDrops: 3 } })
  const a = c.connect(n)
  for (let i = 0; i < 4; i++) a.send('ping', {}, `p${i}`)
  await c.settle()
  t.same(a.frames('pong').map(f => f.id), ['p0', 'p1'])
  t.equal(errorsOf(a, 'rate_limited').length, 2)
  a.send('ping', {}, 'p4')
  await c.settle()
  t.match(a.transport.serverClose, { code: 1008 })
  t.equal(n.hub.stats().sessions, 0, 'a kicked peer is not held')
})

t.test('single instance: a clean close tells the room at once; a drop does not', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const [a, b, d] = [c.connect(n), c.connect(n), c.connect(n)]
  for (const x of [a, b, d]) await join(t, c, x, 'r1')
  b.close(1001)
  d.drop()
  await c.settle()
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId], 'only the clean close is announced')
  t.equal(n.hub.stats().sessions, 2, 'the dropped peer is held')
  t.equal(n.hub.stats().connections, 1)
})

t.test('single instance: resume inside the grace delivers held frames after welcome, in order', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const a = c.connect(n)
  const b = c.connect(n)
  const watcher = c.connect(n)
  for (const x of [a, b, watcher]) await join(t, c, x, 'r1')
  const oldToken = b.token
  b.drop()
  await c.settle()
  a.send('offer', { peerId: b.peerId, offer: sdp(1) }, 'o1')
  a.send('ice-candidate', { peerId: b.peerId, candidate: CANDIDATE }, 'c1')
  a.send('initiator-online', { roomId: 'r1' })
  a.send('offer', { peerId: b.peerId, offer: sdp(2) }, 'o2')
  await c.advance(9_000)
  t.equal(b.frames('offer').length, 0)

  const b2 = c.connect(n, { resumeToken: oldToken })
  await c.settle()
  t.same(b2.types(), ['welcome', 'offer', 'ice-candidate', 'initiator-online', 'offer'], 'welcome, then everything held, in order')
  t.equal(b2.peerId, b.peerId, 'same identity')
  t.not(b2.token, oldToken, 'token rotated')
  t.same(offers(b2), [1, 2])
  t.equal(n.metrics.count('resume'), 1)

  await c.advance(20_000)
  t.equal(a.frames('peer-disconnected').length + watcher.frames('peer-disconnected').length, 0, 'nobody saw a disconnect')
  t.equal(errorsOf(a, 'peer_not_found').length, 0, 'no refusal for anything delivered')

  // The old token is dead: a fresh identity.
  const ghost = c.connect(n, { resumeToken: oldToken })
  await c.settle()
  t.not(ghost.peerId, b.peerId)
  // The new one works while b2 is half-open: the old connection is replaced (4000).
  const b3 = c.connect(n, { resumeToken: b2.token })
  await c.settle()
  t.equal(b3.peerId, b.peerId)
  t.match(b2.transport.serverClose, { code: 4000, reason: 'replaced' })
  t.equal(a.frames('peer-disconnected').length, 0, 'a replaced connection is no disconnect')
  a.send('offer', { peerId: b.peerId, offer: sdp(3) })
  await c.settle()
  t.same(offers(b3), [3], 'the new connection gets what follows')
  t.equal(b2.transport.lost.length, 0, 'nothing written to a closed socket')
})

t.test('single instance: grace expiry tells the room and refuses every relay held for the peer', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const [a, b, d] = [c.connect(n), c.connect(n), c.connect(n)]
  for (const x of [a, b, d]) await join(t, c, x, 'r1')
  b.drop()
  await c.settle()
  a.send('offer', { peerId: b.peerId, offer: sdp(1) }, 'a1')
  a.send('ice-candidate', { peerId: b.peerId, candidate: null }, 'a2')
  d.send('answer', { peerId: b.peerId, answer: { type: 'answer' } }, 'd1')
  d.send('initiator-online', { roomId: 'r1' })
  a.send('ice-candidate', { peerId: b.peerId, candidate: null })
  await c.advance(9_999)
  t.equal(a.frames('peer-disconnected').length, 0, 'held during the grace')
  t.equal(a.frames('error').length, 0)
  await c.advance(1)
  t.same(a.frames('peer-disconnected').map(f => f.data), [{ peerId: b.peerId }])
  t.same(d.frames('peer-disconnected').map(f => f.data), [{ peerId: b.peerId }])
  t.same(errorsOf(a, 'peer_not_found').map(f => [f.data.type, f.id ?? null]), [['offer', 'a1'], ['ice-candidate', 'a2'], ['ice-candidate', null]], 'each held relay refused to its sender, with its id')
  t.same(errorsOf(d, 'peer_not_found').map(f => [f.data.type, f.id]), [['answer', 'd1']], 'a broadcast is not refused')
  t.equal(n.hub.stats().sessions, 2)
  const late = c.connect(n, { resumeToken: b.token })
  await c.settle()
  t.not(late.peerId, b.peerId, 'after the grace the token gives a fresh identity')
})

t.test('single instance: the resume buffer keeps the oldest frames and refuses the rest', async (t) => {
  const { c, n } = await solo(t, { limits: { resumeBufferMax: 3 } })
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  b.drop()
  await c.settle()
  for (let i = 1; i <= 5; i++) a.send('offer', { peerId: b.peerId, offer: sdp(i) }, `o${i}`)
  await c.settle()
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), ['o4', 'o5'], 'refused at once, newest first out')
  const b2 = c.connect(n, { resumeToken: b.token })
  await c.settle()
  t.same(offers(b2), [1, 2, 3], 'the accepted prefix arrives, in order')
  t.equal(errorsOf(a, 'peer_not_found').length, 2, 'nothing accepted was refused later')
})

t.test('single instance: a session that never joined a room is not held', async (t) => {
  const { c, n } = await solo(t)
  const a = c.connect(n)
  a.drop()
  await c.settle()
  t.equal(n.hub.stats().sessions, 0, 'gone at once')
  const again = c.connect(n, { resumeToken: a.token })
  await c.settle()
  t.not(again.peerId, a.peerId, 'its token gives a new identity')
  t.equal(n.hub.stats().sessions, 1)
  const garbage = c.connect(n, { resumeToken: 'no-dot-here' })
  await c.settle()
  t.match(garbage.peerId, /^[A-Za-z0-9_-]{22}$/)
})

t.test('single instance: a left peer is not held after a drop', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  b.send('leave', { roomId: 'r1' })
  await c.settle()
  b.drop()
  await c.settle()
  t.equal(n.hub.stats().sessions, 1)
  t.equal(a.frames('peer-disconnected').length, 1, 'one disconnect: the leave')
})

t.test('single instance: a heartbeat round is spread over ticks, each pinging its share once', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const peers = Array.from({ length: 200 }, () => c.connect(n))
  await c.settle()
  const slices = heartbeatSlices(25_000)
  t.equal(slices, 100, 'the default 25 s round is 100 ticks of 250 ms')
  const pinged = (): number => peers.reduce((sum, p) => sum + p.transport.pings, 0)
  let before = 0
  let largest = 0
  for (let i = 0; i < slices; i++) {
    n.hub.heartbeatTick()
    largest = Math.max(largest, pinged() - before)
    before = pinged()
  }
  t.equal(largest, 2, 'a tick pings its 2 of 200 connections, not all of them')
  t.ok(peers.every(p => p.transport.pings === 1), 'a round pings every connection exactly once')
  n.hub.heartbeatTick()
  t.equal(pinged(), 202, 'the next round starts where the first did')
})

t.test('heartbeat ticks follow the clock: late timers do not stretch the round, a stall catches up at most a round', async (t) => {
  let now = 0
  let pending: { fn: () => void, at: number } | null = null
  const clock = {
    now: () => now,
    setTimeout: (fn: () => void, ms: number) => { pending = { fn, at: now + ms }; return pending as unknown as ReturnType<typeof setTimeout> },
    clearTimeout: () => { pending = null }
  }
  /** Fires the pending timer `lateMs` after it was due. */
  const fire = (lateMs: number): void => {
    const timer = pending as { fn: () => void, at: number } | null
    if (timer === null) throw new Error('no timer pending')
    now = timer.at + lateMs
    timer.fn()
  }
  let ticks = 0
  const stop = startHeartbeat(clock, 1000, () => { ticks++ })
  // 100 ticks of 10 ms; every timer fires 3 ms late.
  for (let i = 0; i < 200 && clock.now() < 1000; i++) fire(3)
  t.ok(ticks >= 99 && ticks <= 100, `a 1 s round is still about 100 ticks in 1 s with late timers (${ticks})`)
  ticks = 0
  fire(250)
  t.ok(ticks >= 25 && ticks <= 27, `a 250 ms stall is caught up at once (${ticks})`)
  ticks = 0
  fire(60_000)
  t.equal(ticks, 101, 'a stall of a minute runs one round, not six thousand ticks')
  stop()
  t.equal(pending, null, 'stopped')
})

t.test('single instance: heartbeat terminates after two missed pongs, and the peer is held', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  n.hub.heartbeat()
  a.handle.pong()
  n.hub.heartbeat()
  n.hub.heartbeat()
  await c.settle()
  t.equal(b.transport.pings, 2)
  t.equal(b.transport.serverClose, 'terminated', 'b missed two pongs')
  t.equal(a.transport.serverClose, null, 'a answered')
  a.send('offer', { peerId: b.peerId, offer: sdp(1) })
  await c.settle()
  const b2 = c.connect(n, { resumeToken: b.token })
  await c.settle()
  t.same(offers(b2), [1], 'held and delivered on resume')
  t.equal(a.frames('peer-disconnected').length, 0)
})

t.test('single instance: a reader that falls behind keeps its connection; frames wait for the socket to drain, bounded', async (t) => {
  const { c, n } = await solo(t, { limits: { maxBufferedBytes: 1000, resumeBufferMax: 3 } })
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  a.send('offer', { peerId: b.peerId, offer: sdp(1) })
  await c.settle()
  b.transport.bufferedAmount = 5000
  for (let i = 2; i <= 6; i++) a.send('offer', { peerId: b.peerId, offer: sdp(i) }, `o${i}`)
  await c.settle()
  await c.advance(100)
  t.equal(b.transport.serverClose, null, 'not cut: that would lose what its socket buffered')
  t.same(offers(b), [1], 'nothing more while the socket is full')
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), ['o5', 'o6'], 'beyond the buffer, the newest are refused')
  b.transport.bufferedAmount = 0
  await c.advance(20)
  t.same(offers(b), [1, 2, 3, 4], 'the rest go out once it drains, in order')
  a.send('offer', { peerId: b.peerId, offer: sdp(7) })
  await c.settle()
  t.same(offers(b), [1, 2, 3, 4, 7], 'and live frames flow directly again')
})

t.test('single instance: a reply to a slow reader waits behind the frames already waiting for it', async (t) => {
  const { c, n } = await solo(t, { limits: { maxBufferedBytes: 1000 } })
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  b.transport.bufferedAmount = 5000
  a.send('offer', { peerId: b.peerId, offer: sdp(1) })
  await c.settle()
  b.send('ping', {}, 'p1')
  await c.settle()
  t.same(b.frames('pong'), [], 'the pong does not overtake the waiting offer')
  b.transport.bufferedAmount = 0
  await c.advance(20)
  const order = b.types().filter(type => type === 'offer' || type === 'pong')
  t.same(order, ['offer', 'pong'], 'in the order they were produced')
})

t.test('single instance: a socket closed by the server with 1009 is not held', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  b.handle.protocolError()
  b.transport.complete(1009)
  await c.settle()
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId])
})

t.test('single instance: shutdown closes with 1001; a lone instance ends what it held when it leaves', async (t) => {
  const { c, n } = await solo(t)
  await room(n, 'r1')
  const [a, b] = [c.connect(n), c.connect(n)]
  for (const x of [a, b]) await join(t, c, x, 'r1')
  await whileAdvancing(c, n.hub.shutdown(500))
  t.match(a.transport.serverClose, { code: 1001 })
  t.match(b.transport.serverClose, { code: 1001 })
  await c.settle()
  t.equal(n.hub.stats().connections, 0)
  t.equal(n.hub.heldSessions(), 2, 'held (as on any instance) until it leaves')
  t.same((await n.store.roomMembers('r1')).length, 2)
  await whileAdvancing(c, n.hub.drain(1000))
  t.same(await n.store.roomMembers('r1'), [], 'nobody can resume them once it is gone: memberships released as it leaves')
})

t.test('single instance: shutdown terminates sockets that never finish closing', async (t) => {
  const { c, n } = await solo(t)
  const a = c.connect(n)
  a.transport.autoComplete = false
  await whileAdvancing(c, n.hub.shutdown(60))
  t.equal(a.transport.serverClose !== null, true)
  t.equal(a.transport.readyState, 3, 'terminated after the wait')
  await c.settle()
  t.equal(n.hub.stats().connections, 0)
})
