import t from 'tap'
import { cluster, join, pair } from './helpers/fake-mesh'
import type { RestoredSession } from '../src/signaling/mesh'

/*
 * What an instance does when the fleet may have moved on without it
 * (src/signaling/faults.ts), on the fake cluster: cut off from Redis for
 * evictAfterMs it sends its clients elsewhere with 1012 (only when another
 * instance was seen to take them) and refuses upgrades until Redis is back;
 * when Redis lost its data it rewrites what it serves until that lands; when
 * the link comes back it checks which sessions are still its own.
 */

t.test('cut off from Redis past evictAfterMs: clients are sent elsewhere with 1012 and upgrades refused until it is back', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'], { limits: { evictAfterMs: 5_000 } })
  const n1 = c.get('n1')
  n1.hub.linkChanged(false)
  n1.hub.linkChanged(false) // a second report of the same outage does not restart the wait
  await c.advance(4_999)
  t.equal(a.transport.serverClose, null, 'kept within evictAfterMs')
  t.equal(n1.hub.accepting(), true)
  await c.advance(1)
  t.same(a.transport.serverClose, { code: 1012, reason: 'instance cut off: resume elsewhere' }, 'closed with 1012: resume elsewhere')
  t.equal(n1.hub.accepting(), false, 'upgrades refused while cut off')
  t.equal(b.transport.serverClose, null, 'the other instance keeps its clients')
  t.equal(n1.metrics.count('closed', 'evicted'), 1, 'counted as evicted')

  const a2 = c.connect('n2', { resumeToken: a.token })
  await c.settle()
  t.equal(a2.peerId, a.peerId, 'the client resumed on the instance that can reach Redis')

  n1.hub.linkChanged(true)
  t.equal(n1.hub.accepting(), true, 'accepting again once Redis is reachable')
})

t.test('Redis back before evictAfterMs: nobody is evicted', async (t) => {
  const { c, a } = await pair(t, ['n1', 'n2'], { limits: { evictAfterMs: 5_000 } })
  const n1 = c.get('n1')
  n1.hub.linkChanged(false)
  await c.advance(4_000)
  n1.hub.linkChanged(true)
  await c.advance(10_000)
  t.equal(a.transport.serverClose, null, 'the client stays')
  t.equal(n1.hub.accepting(), true)
})

t.test('cut off with no other instance in sight: the clients are kept', async (t) => {
  const c = await cluster(t, ['n1', 'n2'], { limits: { evictAfterMs: 5_000 } })
  c.createRoom('r')
  const a = c.connect('n1')
  await join(t, c, a, 'r')
  c.crash('n2')
  const n1 = c.get('n1')
  n1.hub.linkChanged(false)
  await c.advance(6_000)
  t.equal(a.transport.serverClose, null, 'nobody could take them: kept')
  t.equal(n1.hub.accepting(), true, 'upgrades still accepted')
})

t.test('Redis lost its data: every session served here (connected or held) is rewritten, retried every 500 ms until it lands', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  const n1 = c.get('n1')
  const d = c.connect('n1')
  await join(t, c, d, 'r')
  d.drop() // held for resume: still served here
  await c.settle()
  const idle = c.connect('n1') // never joined: no record to rewrite
  await c.settle()
  const calls: RestoredSession[][] = []
  n1.mesh.restore = async (sessions) => {
    calls.push(sessions)
    if (calls.length < 3) throw new Error('redis: command timed out')
  }
  n1.hub.registryLost()
  await c.settle()
  t.equal(calls.length, 1, 'tried at once')
  await c.advance(499)
  t.equal(calls.length, 1)
  await c.advance(1)
  t.equal(calls.length, 2, 'retried after 500 ms')
  await c.advance(500)
  t.equal(calls.length, 3, 'and again, until it lands')
  await c.advance(5_000)
  t.equal(calls.length, 3, 'not after')
  const rewritten = calls[2] ?? []
  t.same(rewritten.map(s => s.peerId).sort(), [a.peerId, d.peerId].sort(), 'both sessions of n1, the held one too; not the idle connection')
  t.ok(rewritten.every(s => s.roomId === 'r' && /^[0-9a-f]{64}$/.test(s.secret)), 'with their room and secret hash')
  t.notOk(rewritten.some(s => s.peerId === idle.peerId || s.peerId === b.peerId))
})

t.test('the link comes back: the ownership check', async (t) => {
  const limits = { stallCheckMs: 1_000 }

  t.test('Redis lost its data meanwhile: no session is taken as claimed or ended elsewhere', async (t) => {
    const { c, a, b } = await pair(t, ['n1', 'n2'], { limits })
    const n1 = c.get('n1')
    n1.mesh.ownersOf = async () => null
    n1.hub.linkChanged(false)
    t.match(n1.hub.fenceStats(), { linkLosses: 1, closed: true }, 'other instances\' messages wait')
    b.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'v=0 #1' } })
    await c.settle()
    t.equal(a.frames('offer').length, 0, 'held behind the fence')
    n1.hub.linkChanged(true)
    await c.settle()
    t.match(n1.hub.fenceStats(), { closed: false })
    t.equal(a.frames('offer').length, 1, 'delivered once ownership is settled')
    t.equal(a.transport.serverClose, null, 'the session is kept')
  })

  t.test('a record missing though this instance was never silent long enough to be reaped is rewritten', async (t) => {
    const { c, a, b } = await pair(t, ['n1', 'n2'], { limits })
    const n1 = c.get('n1')
    const restored: RestoredSession[][] = []
    n1.mesh.ownersOf = async (peerIds) => ({ owners: new Map(peerIds.map(p => [p, null])), reapable: false })
    n1.mesh.restore = async (sessions) => { restored.push(sessions) }
    n1.hub.linkChanged(false)
    n1.hub.linkChanged(true)
    await c.settle()
    t.same(restored.map(list => list.map(s => [s.peerId, s.roomId])), [[[a.peerId, 'r']]], 'a\'s record and membership are rewritten')
    t.equal(a.transport.serverClose, null, 'the client stays')
    b.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'v=0 #1' } })
    await c.settle()
    t.equal(a.frames('offer').length, 1, 'and is reachable')
  })

  t.test('a session that ends while the check is in flight is left alone', async (t) => {
    const { c, a, b } = await pair(t, ['n1', 'n2'], { limits })
    const n1 = c.get('n1')
    let answer: () => void = () => {}
    const asked = new Promise<void>(resolve => { answer = resolve })
    n1.mesh.ownersOf = async (peerIds) => {
      await asked
      return { owners: new Map(peerIds.map(p => [p, null])), reapable: true }
    }
    n1.hub.linkChanged(false)
    n1.hub.linkChanged(true)
    await c.settle()
    a.close() // the client leaves cleanly meanwhile
    await c.settle()
    answer()
    await c.settle()
    t.same(b.frames('peer-disconnected').map(f => f.data.peerId), [a.peerId], 'the room hears of the leave once')
    t.equal(a.transport.serverClose, null, 'the client closed it itself: no 1012 on top')
    t.match(n1.hub.stats(), { sessions: 0 })
  })

  t.test('with no recorded session the check asks nothing', async (t) => {
    const c = await cluster(t, ['n1', 'n2'], { limits })
    const n1 = c.get('n1')
    const idle = c.connect('n1')
    let asked = 0
    n1.mesh.ownersOf = async () => { asked++; return null }
    n1.hub.linkChanged(false)
    n1.hub.linkChanged(true)
    await c.settle()
    t.equal(asked, 0)
    t.match(n1.hub.fenceStats(), { closed: false })
    t.equal(idle.transport.serverClose, null)
  })
})
