import t from 'tap'
import { boom, cluster, errorsOf, join, offerNumbers, pair, sendOffers } from './helpers/fake-mesh'

/*
 * Routing races and failure paths of the signaling core on the fake mesh:
 * route changes with frames in flight, registry lookups racing
 * announcements, peers switching rooms or leaving mid-move, store failures.
 */

t.test('a route change while frames are in flight: nothing overtakes them', async (t) => {
  t.test('the old instance took them', async (t) => {
    const { c, a, b } = await pair(t)
    b.drop()
    await c.settle()
    c.holdAnswers('n1')
    sendOffers(a, b, 1, 1) // reaches n2, its answer is slow
    await c.settle()
    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle() // n1 hears of the move while 1 is unanswered
    sendOffers(a, b, 2, 2)
    await c.settle()
    t.same(offerNumbers(b2), [1], 'the handed-over frame; 2 waits for 1\'s answer')
    c.releaseAnswers('n1')
    await c.settle()
    t.same(offerNumbers(b2), [1, 2])
    t.equal(errorsOf(a, 'peer_not_found').length, 0)
  })

  t.test('the old instance was gone: the bounced frame goes first', async (t) => {
    const { c, a, b } = await pair(t)
    c.crash('n2')
    c.holdAnswers('n1')
    sendOffers(a, b, 1, 1) // reaches nobody; the answer says so later
    await c.settle()
    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    sendOffers(a, b, 2, 2)
    await c.settle()
    t.same(offerNumbers(b2), [], '2 waits behind the unanswered 1')
    c.releaseAnswers('n1')
    await c.settle()
    t.same(offerNumbers(b2), [1, 2], 'in order')
    t.equal(c.get('n1').metrics.count('rerouted'), 1)
  })
})

t.test('the registry lookup fails, then races the announcement', async (t) => {
  const { c, a, b } = await pair(t)
  c.crash('n2')
  c.intercept('n1', 'ownerOf', boom)
  let answer!: () => void
  c.intercept('n1', 'ownerOf', () => new Promise<void>(resolve => { answer = resolve }))
  sendOffers(a, b, 1, 1)
  await c.settle()
  await c.advance(200) // the failed lookup is retried; the retry hangs
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  t.same(offerNumbers(b2), [1], 'the announcement re-routed it')
  answer()
  await c.settle()
  sendOffers(a, b, 2, 2)
  await c.settle()
  t.same(offerNumbers(b2), [1, 2], 'the stale answer changed nothing')
  t.equal(errorsOf(a, 'peer_not_found').length, 0)
})

t.test('a peer that switched rooms is routed in its new room before its old room hears it left', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  c.createRoom('r2')
  c.hold('n2', 'n1')
  b.send('leave', { roomId: 'r' })
  await c.settle()
  await join(t, c, b, 'r2')
  const d = c.connect('n1')
  t.same(await join(t, c, d, 'r2'), [b.peerId])
  d.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 #1' } }, 'd1')
  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 #2' } }, 'a1')
  await c.settle()
  t.same(offerNumbers(b), [1], 'the new room\'s member reaches it')
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), ['a1'], 'the old room\'s does not')
  c.release('n2', 'n1')
  await c.settle()
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId])
  t.equal(d.frames('peer-disconnected').length, 0)
})

t.test('a peer that resumes and leaves before the handover arrives: its senders hear peer_not_found', async (t) => {
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  sendOffers(a, b, 1, 2)
  await c.settle()
  c.hold('n2', 'n3')
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  b2.close()
  await c.settle()
  c.release('n2', 'n3')
  await c.settle()
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId], 'told once')
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), ['o1', 'o2'], 'the handed-over relays refused')
  t.same(c.members('r').map(m => m.peerId), [a.peerId])
})

t.test('one forward carries a broadcast for every moved peer of an instance', async (t) => {
  const c = await cluster(t, ['n1', 'n2', 'n3'])
  c.createRoom('r')
  const a = c.connect('n1')
  const b = c.connect('n2')
  const d = c.connect('n2')
  for (const x of [a, b, d]) await join(t, c, x, 'r')
  b.drop()
  d.drop()
  await c.settle()
  c.hold('n3', 'n1') // n1 keeps the old routes
  const b2 = c.connect('n3', { resumeToken: b.token })
  const d2 = c.connect('n3', { resumeToken: d.token })
  await c.settle()
  c.hold('n2', 'n3')
  a.send('initiator-online', { roomId: 'r' })
  await c.settle()
  const forwarded = c.queued('n2', 'n3').filter(m => m.kind === 'D')
  t.same(forwarded.map(m => m.kind === 'D' ? m.targets.map(([p]) => p).sort() : []), [[b.peerId, d.peerId].sort()], 'one message, both targets')
  c.release('n2', 'n3')
  c.release('n3', 'n1')
  await c.settle()
  t.same([b2, d2].map(x => x.frames('initiator-online').length), [1, 1])
})

t.test('a frame from the sender\'s previous instance that arrives after its newer ones is refused to the sender by id, never delivered out of order', async (t) => {
  // Until round 3 it was delivered late ("late, but not lost"): after offer 3.
  // Its sender has moved to n3 under a new epoch; the refusal reaches it there
  // (n1 passes it on, as it passes on frames for a peer that moved).
  const { c, a, b } = await pair(t)
  sendOffers(a, b, 1, 1)
  await c.settle()
  c.hold('n1', 'n2')
  sendOffers(a, b, 2, 2) // on its way from n1
  await c.settle()
  a.drop()
  await c.settle()
  const a2 = c.connect('n3', { resumeToken: a.token })
  await c.settle()
  t.equal(a2.peerId, a.peerId)
  sendOffers(a2, b, 3, 3) // from n3, under a new epoch
  await c.settle()
  c.release('n1', 'n2')
  await c.settle()
  t.same(offerNumbers(b), [1, 3], 'in order, each once')
  t.same(errorsOf(a2, 'unavailable').map(f => f.id), ['o2'], 'the overtaken one is refused by id where its sender is now')
  t.equal(errorsOf(a2, 'peer_not_found').length, 0)
})

t.test('a resume that races a leave ends in no room', async (t) => {
  const { c, a, b } = await pair(t)
  let claim!: () => void
  c.intercept('n3', 'claimSession', () => new Promise<void>(resolve => { claim = resolve }))
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  b.send('leave', { roomId: 'r' }, 'l') // on its old, still open connection
  await c.settle()
  claim()
  await c.settle()
  t.equal(b2.peerId, b.peerId, 'resumed')
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId], 'the leave was heard')
  b2.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'v=0 #1' } }, 'x')
  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 #2' } }, 'y')
  await c.settle()
  t.same(errorsOf(b2, 'peer_not_found').map(f => f.id), ['x'], 'in no room')
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), ['y'])
  t.match(c.get('n3').hub.stats(), { sessions: 1, rooms: 0 })
})

t.test('a stale token whose lookup outlives the socket leaves nothing behind', async (t) => {
  const c = await cluster(t, ['n1', 'n2'])
  let read!: () => void
  c.intercept('n2', 'readSession', () => new Promise<void>(resolve => { read = resolve }))
  const x = c.connect('n2', { resumeToken: 'unknownpeer.secret' })
  await c.settle()
  x.drop()
  read()
  await c.settle()
  await c.advance(5_000)
  t.same(c.get('n2').hub.stats(), { connections: 0, sessions: 0, rooms: 0, remotes: 0, waiting: 0 })
  t.same(x.transport.lost, [])
})

t.test('a local resume whose token rotation is not recorded still resumes', async (t) => {
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  c.intercept('n2', 'rotateSecret', boom)
  const b2 = c.connect('n2', { resumeToken: b.token })
  await c.settle()
  t.equal(b2.peerId, b.peerId)
  sendOffers(a, b, 1, 1)
  await c.settle()
  t.same(offerNumbers(b2), [1])
})

t.test('store failures answer unavailable', async (t) => {
  const { c, a, b } = await pair(t)
  c.createRoom('r2')
  const d = c.connect('n1')
  c.intercept('n1', 'joinRoom', boom)
  d.send('join', { roomId: 'r2' }, 'j')
  await c.settle()
  t.same(d.frames('joinResponse').map(f => [f.id, f.data]), [['j', { success: false, code: 'unavailable', message: 'Service temporarily unavailable, try again', roomId: 'r2' }]])

  c.intercept('n1', 'leaveRoom', boom)
  a.send('leave', { roomId: 'r' }, 'l')
  await c.settle()
  t.same(a.frames('leaveResponse').map(f => f.data), [{ success: true, roomId: 'r' }], 'left locally all the same')
  t.same(b.frames('peer-disconnected').map(f => f.data.peerId), [a.peerId], 'and the room was told')
})

t.test('a failure while handling a message answers unavailable to its sender', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  const d = c.connect('n1')
  await join(t, c, d, 'r')
  d.transport.failSends = 1
  a.send('offer', { peerId: d.peerId, offer: { type: 'offer', sdp: 'v=0 #1' } }, 'boom')
  await c.settle()
  t.same(a.frames('error').map(f => f.data.code), ['unavailable'])
  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 #2' } })
  await c.settle()
  t.same(offerNumbers(b), [2], 'the connection goes on')
})

t.test('a resume that races the grace expiry on the old instance keeps the session', async (t) => {
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  sendOffers(a, b, 1, 2)
  await c.settle()
  let end!: () => void
  c.intercept('n2', 'endSession', () => new Promise<void>(resolve => { end = resolve }))
  await c.advance(10_000) // n2's grace runs out; its end is on its way to the registry…
  const b2 = c.connect('n3', { resumeToken: b.token }) // …and the resume claims first
  await c.settle()
  end()
  await c.advance(10_000)
  t.equal(b2.peerId, b.peerId)
  t.same(offerNumbers(b2), [1, 2], 'handed over')
  t.equal(a.frames('peer-disconnected').length, 0, 'nobody saw a disconnect')
  sendOffers(a, b, 3, 3)
  await c.settle()
  t.same(offerNumbers(b2), [1, 2, 3])
  t.equal(errorsOf(a, 'peer_not_found').length, 0)
})

t.test('a slow handover: the resumed peer goes on after HANDOVER_WAIT_MS', async (t) => {
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  c.hold('n2', 'n3')
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  sendOffers(a, b, 1, 1)
  await c.settle()
  t.same(offerNumbers(b2), [], 'waits for the handover')
  await c.advance(2_000)
  t.same(offerNumbers(b2), [1], 'then goes on without it')
  c.release('n2', 'n3') // the (empty) handover arrives late
  await c.settle()
  sendOffers(a, b, 2, 2)
  await c.settle()
  t.same(offerNumbers(b2), [1, 2])
})
