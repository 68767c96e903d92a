import t from 'tap'
import { errorsOf, offerNumbers, pair, sendOffers } from './helpers/fake-mesh'

/*
 * The hub behind its fence (src/signaling/fence.ts, hub.ts verifyOwnership
 * and lose), on the fake cluster: an instance that "froze" (its bus links
 * held, then the clock jumped without its timers running) wakes up after its
 * peer resumed elsewhere. What it read while frozen must not reach anyone
 * out of order: stale client frames are refused to the client by id where it
 * is served now, frames for the moved peer go on to its new instance, which
 * delivers them only if nothing newer from their sender went out there.
 */

t.test('a frozen instance wakes up: stale frames are refused by id where their senders are now, nothing arrives out of order', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2', 'n3'], { limits: { stallCheckMs: 1000 } })
  sendOffers(a, b, 1, 2)
  await c.settle()
  t.same(offerNumbers(b, a), [1, 2])

  // n1 freezes: nothing reaches it from the other instances.
  c.hold('n2', 'n1')
  c.hold('n3', 'n1')
  sendOffers(b, a, 5, 6) // published to n1 while it is frozen
  await c.settle()
  const a2 = c.connect('n3', { resumeToken: a.token }) // a gave up on n1 and resumed
  await c.settle()
  t.equal(a2.peerId, a.peerId, 'resumed with its identity')
  await c.advance(2_000) // no handover from the frozen n1: n3 goes on
  sendOffers(a2, b, 3, 3)
  sendOffers(b, a2, 10, 11)
  await c.settle()
  t.same(offerNumbers(a2, b), [10, 11])

  // n1 wakes up: the clock has moved on without its timers.
  c.clock.set(c.clock.now() + 8_000)
  sendOffers(a, b, 4, 4) // written into the stale socket before the client left
  c.release('n2', 'n1')
  c.release('n3', 'n1')
  await c.settle()
  await c.advance(1_000)

  t.same(offerNumbers(b, a), [1, 2, 3], 'b got a\'s offers once each, in order; the stale one is not among them')
  t.same(errorsOf(a2, 'unavailable').map(f => f.id), ['o4'], 'the stale frame is refused to a by id, on the instance that serves it now')
  t.same(offerNumbers(a2, b), [10, 11], 'a got b\'s newer offers only')
  t.same(errorsOf(b, 'unavailable').map(f => f.id), ['o5', 'o6'], 'b\'s offers that reached the frozen instance are refused by id: newer ones overtook them')
  t.same(a.frames('offer').length, 0, 'the stale socket got nothing written to it')
  t.equal(c.get('n1').hub.fenceStats().stalls, 1, 'n1 noticed its stall')
  t.match(c.get('n1').hub.stats(), { sessions: 0 }, 'and let go of the session claimed elsewhere')
  t.match(a.transport.serverClose, { code: 4000 }, 'its stale socket is closed as replaced')
})

t.test('a frozen instance whose session was ended elsewhere closes the stale socket with 1012 and tells nobody', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2', 'n3'], { limits: { stallCheckMs: 1000 } })
  c.hold('n2', 'n1')
  c.hold('n3', 'n1')
  // The fleet declared n1 dead and ended its session (the reaper's step).
  c.reap('n1', 'n2')
  await c.settle()
  t.same(b.frames('peer-disconnected').map(f => f.data.peerId), [a.peerId], 'the reaper told the room')
  c.clock.set(c.clock.now() + 8_000)
  sendOffers(a, b, 1, 1)
  c.release('n2', 'n1')
  c.release('n3', 'n1')
  await c.settle()
  await c.advance(1_000)
  t.same(offerNumbers(b, a), [], 'nothing from the ended session is relayed')
  t.match(a.transport.serverClose, { code: 1012 }, 'its client is sent to start afresh elsewhere')
  t.same(b.frames('peer-disconnected').length, 1, 'no second announcement')
})
