import t, { type Test } from 'tap'
import { errorsOf, type FakeClient, FakeCluster, offerNumbers, pair, range, sendOffers } from './helpers/fake-mesh'
import { whileAdvancing } from './helpers/fake-time'

/*
 * Races in the signaling core that once broke the delivery guarantee of
 * docs/protocol.md §3.3 ("a relayed message the server accepts is delivered
 * exactly once, in order, …; when it cannot be delivered the sender gets
 * peer_not_found"). Each comment says what went wrong and how it was fixed.
 */

/**
 * Every offer numbered 1..n reached `to` exactly once and in order, or its
 * sender was refused it by id (peer_not_found, or unavailable for one that
 * could no longer arrive in order), never both.
 */
function accountedFor (t: Test, sender: FakeClient, to: FakeClient, n: number): void {
  const got = offerNumbers(to, sender)
  const refused = new Set([...errorsOf(sender, 'peer_not_found'), ...errorsOf(sender, 'unavailable')].map(f => f.id))
  for (const i of range(1, n)) {
    const times = got.filter(x => x === i).length
    t.ok((times === 1 && !refused.has(`o${i}`)) || (times === 0 && refused.has(`o${i}`)), `offer ${i}: delivered ${times}×, refused: ${refused.has(`o${i}`)}`)
  }
  t.same(got, [...got].sort((a, b) => a - b), 'in the order sent')
}

t.test('a handover that arrives after HANDOVER_WAIT_MS is refused by id, never delivered after newer frames', async (t) => {
  // hub.ts handedOver(): a late handover is delivered "through the sequence
  // check", but by then the first direct frame has set the sender's baseline
  // past the handed-over frames (delivery.ts sequenced(): no baseline → the
  // first frame sets it), so they count as duplicates and vanish; forwarded
  // frames that arrive after that are dropped the same way. Nobody is told.
  // Fix: frames in a handover were accepted once and taken once (takeHeld),
  // so a late handover must emit them without the duplicate check; and while
  // the gate opened without a baseline (timeout), remember the seqs actually
  // delivered per sender instead of assuming everything below the first one
  // was seen (or keep waiting for the handover while the old instance lives).
  // Round 3 (fleet faults): emitted late, 1 and 2 arrived after 3 and 4, out
  // of order. Now a late handover's frame goes out only if nothing newer from
  // its sender went out here (delivery.ts lateHandover); otherwise its sender
  // is refused it by id with `unavailable`.
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  sendOffers(a, b, 1, 2) // held on n2
  await c.settle()
  c.hold('n2', 'n3') // the handover is slow
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  await c.advance(2_000) // HANDOVER_WAIT_MS: n3 goes on without it
  sendOffers(a, b, 3, 4) // direct now
  await c.settle()
  t.same(offerNumbers(b2), [3, 4])
  c.release('n2', 'n3')
  await c.settle()
  await c.advance(5_000)
  accountedFor(t, a, b2, 4)
  t.same(errorsOf(a, 'unavailable').map(f => f.id), ['o1', 'o2'], 'the two overtaken offers are refused by id')
})

t.test('frames parked by a draining instance while the peer resumes elsewhere reach it', async (t) => {
  // hub.ts drain(): park() answers with the new owner when the peer moved
  // meanwhile, and the frames are posted to it as a second H. The new owner
  // already opened its gate with the (empty) handover of release(), whose
  // baseline covers those frames, so handedOver()'s late path drops them as
  // duplicates. Same fix as above: a late handover's frames are emitted
  // without the duplicate check (they were taken from the held buffer once).
  const { c, a, b } = await pair(t)
  const n2 = c.get('n2')
  await whileAdvancing(c, n2.hub.shutdown(1_000))
  await c.settle()
  sendOffers(a, b, 1, 2) // held on the draining n2
  await c.settle()
  let releasePark!: () => void
  c.intercept('n2', 'park', () => new Promise<void>(resolve => { releasePark = resolve }))
  const drained = n2.hub.drain(0) // budget spent: park what is held
  await c.settle()
  const b2 = c.connect('n3', { resumeToken: b.token }) // claims while the park is on its way
  await c.settle()
  releasePark()
  await whileAdvancing(c, drained)
  await c.settle()
  await c.advance(5_000)
  accountedFor(t, a, b2, 2)
})

t.test('a failed resume on the sender\'s instance leaves the sender\'s route to the peer intact', async (t) => {
  // hub.ts resumeFromMesh(): before claiming, it binds the session here and
  // calls router.learnRoom(room, [{ peerId, instance: self }]), which removes
  // the route to the peer's real instance (n2). When the claim fails,
  // abandon() forgets the local session (and discards what a local sender
  // relayed to it meanwhile, refusing it), but never restores the route: every
  // later relay from a to b is refused (router.knows() is false), although b
  // is held on n2 and resumes fine. Fix: learn the room only once the claim
  // succeeded (frames from local senders can wait at the closed gate without
  // a route change), or in abandon() put the route back
  // (router.moved(roomId, peerId, record.node)) and hand what waited at the
  // gate to the router instead of discarding it.
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  c.intercept('n1', 'claimSession', () => { throw new Error('redis: command timed out') })
  const x = c.connect('n1', { resumeToken: b.token })
  await c.settle()
  t.not(x.peerId, b.peerId, 'the failed resume got a fresh identity')
  sendOffers(a, b, 1, 2) // b is still held on n2
  await c.settle()
  const b2 = c.connect('n2', { resumeToken: b.token })
  await c.settle()
  t.equal(b2.peerId, b.peerId, 'b resumes where it was held')
  sendOffers(a, b, 3, 3)
  await c.settle()
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), [], 'a may still relay to b')
  t.same(offerNumbers(b2), [1, 2, 3])
})

t.test('relays sent while a resume is being claimed on the sender\'s instance still reach the peer when the claim fails', async (t) => {
  // Same place: while the claim is pending the peer is bound here behind a
  // closed gate, so a's relays go into it; abandon() discards them
  // (peer_not_found) although b is alive on n2. Fix: see above.
  const { c, a, b } = await pair(t)
  let fail!: () => void
  c.intercept('n1', 'claimSession', () => new Promise<void>((_resolve, reject) => { fail = () => reject(new Error('timeout')) }))
  c.connect('n1', { resumeToken: b.token })
  await c.settle()
  sendOffers(a, b, 1, 1)
  await c.settle()
  fail()
  await c.settle()
  accountedFor(t, a, b, 1)
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), [], 'b was in the room all along')
})

t.test('an instance that is briefly deaf (resubscribing) gets its relays once it hears again', async (t) => {
  // router.ts treats a publish that reached nobody as "the instance is gone"
  // and waits for the peer to show up elsewhere; resolve() keeps asking the
  // registry and, while the owner is unchanged, never publishes to it again.
  // The Redis mesh answers false (PUBLISH → 0) also while a live instance
  // re-subscribes after a reconnect of its subscriber connection. Its peers
  // never move, so after rerouteDeadlineMs every waiting relay is refused,
  // and the route is removed: later relays are refused at once (the peer is
  // still in the room and connected). Fix: in resolve(), when the owner is
  // still the "dead" node, publish the bounced frames to it again (a gone
  // instance answers false again, cheaply); or have the Redis mesh's send()
  // answer false only for an instance that stopped heart-beating.
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  const n2 = c.get('n2')
  n2.stopped = true // its subscription is being re-established
  sendOffers(a, b, 1, 2)
  await c.settle()
  await c.advance(300)
  n2.stopped = false // hears again, a moment later
  await c.advance(1_000)
  sendOffers(a, b, 3, 3)
  await c.settle()
  await c.advance(40_000)
  sendOffers(a, b, 4, 4)
  await c.settle()
  t.same(offerNumbers(b), [1, 2, 3, 4], 'delivered once the instance hears again')
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), [], 'b never left')
})

t.test('a join that raced a disconnect leaves no resumable session behind', async (t) => {
  // handlers.ts join(): when the session ended while the store answered, the
  // join is undone with store.leaveRoom(), which keeps the session record the
  // join wrote (JOIN_ROOM writes session:<peerId>). Once the ended session is
  // gone from its instance (RELEASE_WAIT_MS later), the old token resumes it:
  // §3.5 says a session that never joined a room is not held and a stale
  // token gives a fresh identity. Fix: undo with mesh.endSession(peerId,
  // roomId) (which deletes the record and the membership in one step; the
  // LocalMesh one is store.leaveRoom).
  const c = new FakeCluster()
  t.teardown(() => c.close())
  c.node('n1')
  c.node('n2')
  c.createRoom('r')
  const b = c.connect('n2')
  let release!: () => void
  c.intercept('n2', 'joinRoom', () => new Promise<void>(resolve => { release = resolve }))
  b.send('join', { roomId: 'r' }, 'j')
  await c.settle()
  b.drop()
  await c.settle()
  release()
  await c.settle()
  await c.advance(5_000)
  t.equal(c.sessions.has(b.peerId), false, 'no session record left')
  const again = c.connect('n1', { resumeToken: b.token })
  await c.settle()
  t.not(again.peerId, b.peerId, 'a fresh identity')
})

t.test('a claim whose answer was lost makes the room hear the departure once', async (t) => {
  // The claiming instance ends the session it may have taken (abandon() →
  // gone(): peer-disconnected); the old instance, still holding it, ends it
  // again when its grace runs out: mesh.endSession() answers null, so it
  // waits RELEASE_WAIT_MS for a release that never comes and then finish() →
  // departed() broadcasts peer-disconnected a second time. Fix: in
  // endSession()'s null branch, check mesh.ownerOf(): null means the session
  // is over (ended elsewhere): discard what is held without a second
  // departure broadcast (just unbind locally).
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  sendOffers(a, b, 1, 1)
  await c.settle()
  c.intercept('n3', 'claimSession', () => { throw new Error('timeout') }, 'after')
  c.connect('n3', { resumeToken: b.token })
  await c.settle()
  await c.advance(20_000)
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId], 'told once')
  t.same(errorsOf(a, 'peer_not_found').map(f => f.id), ['o1'], 'the held relay refused')
})

t.test('an old instance that missed the takeover hands over instead of announcing a departure', async (t) => {
  // When T does not reach the old instance (it answered false: a subscriber
  // reconnect, see above; or it arrives after RELEASE_WAIT_MS), the old
  // instance's grace later expires: mesh.endSession() answers null (owned
  // elsewhere), it waits RELEASE_WAIT_MS, then finish() → departed()
  // broadcasts peer-disconnected and announces M '' for a peer that is alive
  // on another instance, and every instance drops its route to it. Fix: when
  // the release wait runs out, ask mesh.ownerOf(): if another instance owns
  // the session, do what release() does (hand what is held to the owner,
  // forget the session locally, no departure); only a null owner is a
  // departure.
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  const n2 = c.get('n2')
  n2.stopped = true // deaf for a moment: the takeover's T answers false
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  n2.stopped = false
  t.equal(b2.peerId, b.peerId, 'resumed on n3')
  await c.advance(20_000)
  t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [], 'b never left')
  sendOffers(a, b, 1, 1)
  await c.settle()
  t.same(offerNumbers(b2), [1], 'and can still be reached')
})

t.test('frames waiting behind a gap are not overtaken by a frame that comes after the reconciliation window', async (t) => {
  // delivery.ts sequenced(): after RECONCILE_MS a frame ahead of the
  // expected sequence skipped straight to itself, leaving the frames that
  // waited behind the gap (for GAP_WAIT_MS) below `next`, where releaseGaps
  // took them for repeats and dropped them: accepted, never delivered, nobody
  // told (seen in the partition test's reset run, 28 messages between two
  // healthy instances). Fix: the waiting frames go out first, in order.
  const { c, a, b } = await pair(t)
  b.drop()
  await c.settle()
  const b2 = c.connect('n3', { resumeToken: b.token })
  await c.settle()
  sendOffers(a, b2, 1, 1) // sets where a's sequence stands at n3
  await c.settle()
  await c.advance(2_500) // inside the reconciliation window that the resume opened
  c.hold('n1', 'n3')
  sendOffers(a, b2, 2, 4)
  await c.settle()
  c.lose('n1', 'n3', msg => msg.kind === 'D' && msg.frame.includes('#2'))
  c.release('n1', 'n3')
  await c.settle()
  t.same(offerNumbers(b2), [1], '3 and 4 wait for the missing 2')
  await c.advance(600) // past the window, before the gap's own wait is over
  sendOffers(a, b2, 5, 5)
  await c.settle()
  t.same(offerNumbers(b2), [1, 3, 4, 5], 'the waiting frames go out first, in order; none is dropped')
})
