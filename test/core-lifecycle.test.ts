import t, { type Test } from 'tap'
import { FakeCluster, errorsOf, join, offerNumbers, sendOffers, type ClusterOptions, type FakeClient } from './helpers/fake-mesh'

/*
 * Session lifecycles across instances on the fake mesh: failed and racing
 * takeovers, a join racing a disconnect, and draining an instance.
 */

async function pair (t: Test, names = ['n1', 'n2', 'n3'], opts: ClusterOptions = {}): Promise<{ c: FakeCluster, a: FakeClient, b: FakeClient }> {
  const c = new FakeCluster(opts)
  t.teardown(() => c.close())
  for (const name of names) c.node(name)
  c.createRoom('r')
  const a = c.connect('n1')
  const b = c.connect('n2')
  await join(t, c, a, 'r')
  await join(t, c, b, 'r')
  return { c, a, b }
}

const boom = (): never => { throw new Error('redis: command timed out') }

t.test('claim failures leave no orphan session on the claiming instance', async (t) => {
  t.test('the claim failed before it applied: a fresh identity, and the session can still be resumed', async (t) => {
    const { c, a, b } = await pair(t)
    b.drop()
    await c.settle()
    sendOffers(a, b, 1, 2)
    await c.settle()
    c.intercept('n3', 'claimSession', boom)
    const x = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.not(x.peerId, b.peerId, 'a fresh identity')
    t.same(x.types(), ['welcome'])
    const n3 = c.get('n3').hub
    t.match(n3.stats(), { sessions: 1, rooms: 0, remotes: 0, waiting: 0 }, 'only the fresh session')
    t.same(c.members('r').map(m => m.instance), ['n1', 'n2'], 'still owned by n2')
    x.close()
    await c.advance(5_000)
    t.equal(n3.stats().sessions, 0, 'nothing left on n3')
    t.equal(a.frames('peer-disconnected').length, 0)

    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.equal(b2.peerId, b.peerId, 'a later resume works')
    t.same(offerNumbers(b2), [1, 2], 'with everything held for it')
    t.equal(errorsOf(a, 'peer_not_found').length, 0)
  })

  t.test('the claim applied but its answer was lost: the session is ended, not orphaned', async (t) => {
    const { c, a, b } = await pair(t)
    b.drop()
    await c.settle()
    c.intercept('n3', 'claimSession', boom, 'after')
    const x = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.not(x.peerId, b.peerId, 'a fresh identity')
    t.match(c.get('n3').hub.stats(), { sessions: 1, rooms: 0 })
    t.same(c.members('r').map(m => m.peerId), [a.peerId], 'membership released')
    t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId], 'the room hears the session ended')
    const again = c.connect('n1', { resumeToken: b.token })
    await c.settle()
    t.not(again.peerId, b.peerId, 'the token is dead')
  })

  t.test('the cleanup after an unknown outcome retries while the registry is down', async (t) => {
    const { c, a, b } = await pair(t)
    b.drop()
    await c.settle()
    c.intercept('n3', 'claimSession', boom, 'after')
    c.intercept('n3', 'endSession', boom)
    c.intercept('n3', 'endSession', boom)
    c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.equal(a.frames('peer-disconnected').length, 0, 'not yet')
    await c.advance(2_000)
    t.same(a.frames('peer-disconnected').map(f => f.data.peerId), [b.peerId], 'after two retries')
  })

  t.test('two resumes race with one token: one wins, the other gets a fresh identity', async (t) => {
    const { c, a, b } = await pair(t)
    b.drop()
    await c.settle()
    sendOffers(a, b, 1, 1)
    await c.settle()
    let release!: () => void
    c.intercept('n3', 'claimSession', () => new Promise<void>(resolve => { release = resolve }))
    const loser = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    const winner = c.connect('n1', { resumeToken: b.token })
    await c.settle()
    release()
    await c.settle()
    t.equal(winner.peerId, b.peerId)
    t.not(loser.peerId, b.peerId)
    sendOffers(a, b, 2, 2)
    await c.settle()
    t.same(offerNumbers(winner), [1, 2])
    t.equal(offerNumbers(loser).length, 0)
    t.match(c.get('n3').hub.stats(), { sessions: 1, rooms: 0 })
    t.equal(a.frames('peer-disconnected').length, 0)
  })
})

t.test('a join racing a disconnect: nobody is told the peer joined, membership undone', async (t) => {
  for (const how of ['drop', 'close'] as const) {
    t.test(how, async (t) => {
      const c = new FakeCluster()
      t.teardown(() => c.close())
      c.node('n1')
      c.node('n2')
      c.createRoom('r')
      const a = c.connect('n1')
      await join(t, c, a, 'r')
      const b = c.connect('n2')
      let release!: () => void
      c.intercept('n2', 'joinRoom', () => new Promise<void>(resolve => { release = resolve }))
      b.send('join', { roomId: 'r' }, 'j')
      await c.settle()
      if (how === 'drop') b.drop()
      else b.close()
      await c.settle()
      release()
      await c.settle()
      t.equal(a.frames('ready').length, 0, 'no ready')
      t.equal(a.frames('peer-disconnected').length, 0, 'no disconnect for a peer that never joined')
      t.same(c.members('r').map(m => m.peerId), [a.peerId], 'membership undone')
      t.same([...b.transport.lost, ...b.inbox].filter(f => f.type === 'joinResponse'), [], 'no reply written')
      const d = c.connect('n1')
      t.same(await join(t, c, d, 'r'), [a.peerId], 'a later joiner does not see it')
      await c.advance(5_000)
      t.equal(c.get('n2').hub.stats().sessions, 0, 'gone from its instance')
    })
  }
})

t.test('draining an instance', async (t) => {
  t.test('shutdown holds its peers; drain serves them until they moved', async (t) => {
    const { c, a, b } = await pair(t)
    const n2 = c.get('n2')
    b.transport.autoComplete = false
    const closing = n2.hub.shutdown(1_000)
    t.match(b.transport.serverClose, { code: 1001 }, 'closed with 1001')
    b.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'v=0 #7' } }, 'late')
    b.transport.complete(1001)
    await closing
    await c.settle()
    t.same(offerNumbers(a), [7], 'a frame sent before the client saw the close still counts')
    t.equal(n2.hub.stats().sessions, 1, 'held: another instance can take it over')
    t.equal(a.frames('peer-disconnected').length, 0)

    sendOffers(a, b, 1, 2)
    await c.settle()
    const drained = n2.hub.drain(5_000)
    await c.settle()
    t.equal(n2.stopped, false, 'still serving while the session is held')
    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    sendOffers(a, b, 3, 3)
    await drained
    await c.settle()
    t.same(offerNumbers(b2), [1, 2, 3], 'handed over, then directly')
    t.equal(n2.stopped && n2.left, true, 'stopped and left')
    t.equal(c.parked.size, 0, 'nothing left behind')
    t.equal(a.frames('peer-disconnected').length, 0)
    t.equal(errorsOf(a, 'peer_not_found').length, 0)
  })

  t.test('leftovers are parked and reach the peer when it resumes elsewhere', async (t) => {
    const { c, a, b } = await pair(t)
    const n2 = c.get('n2')
    await n2.hub.shutdown(1_000)
    await c.settle()
    sendOffers(a, b, 1, 2)
    await c.settle()
    await n2.hub.drain(30)
    t.equal(c.parked.get(b.peerId)?.length, 1, 'parked in the registry')
    t.equal(n2.left, true)
    sendOffers(a, b, 3, 4) // to a stopped instance: they bounce and wait
    await c.settle()
    t.equal(a.frames('error').length, 0)
    await c.advance(3_000)
    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.same(b2.types().slice(0, 1), ['welcome'])
    t.same(offerNumbers(b2), [1, 2, 3, 4], 'parked, then re-routed: in order, none lost')
    t.equal(c.parked.size, 0, 'the claim took them')
    t.equal(a.frames('peer-disconnected').length, 0)
  })

  t.test('frames waiting for a crashed instance\'s peer are parked for it too', async (t) => {
    const { c, a, b } = await pair(t)
    c.crash('n2')
    sendOffers(a, b, 1, 2)
    await c.settle()
    const n1 = c.get('n1')
    await n1.hub.shutdown(1_000)
    await c.settle()
    await n1.hub.drain(30)
    t.equal(c.parked.get(b.peerId)?.length, 1)
    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.same(offerNumbers(b2), [1, 2])
    // a, held on the drained n1, resumes too and reaches b.
    const a2 = c.connect('n3', { resumeToken: a.token })
    await c.settle()
    t.equal(a2.peerId, a.peerId)
    sendOffers(a2, b2, 3, 3)
    await c.settle()
    t.same(offerNumbers(b2), [1, 2, 3])
  })

  t.test('a drain without other instances does not wait', async (t) => {
    const { c, b } = await pair(t, ['n1', 'n2'])
    c.crash('n1')
    const n2 = c.get('n2')
    await n2.hub.shutdown(1_000)
    await c.settle()
    const started = Date.now()
    await n2.hub.drain(5_000)
    t.ok(Date.now() - started < 1_000, 'no budget spent')
    t.equal(c.parked.size, 0, 'nothing held to park')
    t.equal(n2.left, true)
    t.equal(c.sessions.get(b.peerId)?.node, 'n2', 'left for a survivor to end')
  })

  t.test('frames parked by another instance merge with the handover', async (t) => {
    const { c, a, b } = await pair(t)
    // n2 is briefly deaf (its subscription is re-established): n1's frames bounce.
    const n2 = c.get('n2')
    n2.stopped = true
    sendOffers(a, b, 1, 2)
    await c.settle()
    const n1 = c.get('n1')
    await n1.hub.shutdown(1_000)
    await c.settle()
    await n1.hub.drain(30)
    t.equal(c.parked.get(b.peerId)?.length, 1, 'parked for b')
    n2.stopped = false
    b.drop()
    await c.settle()
    const b2 = c.connect('n3', { resumeToken: b.token })
    await c.settle()
    t.same(offerNumbers(b2), [1, 2])
  })
})
