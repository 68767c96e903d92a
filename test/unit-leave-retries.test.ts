import t from 'tap'
import { boom, FakeClock, join, pair, type FakeCluster } from './helpers/fake-mesh'
import { LEAVE_RETRY_MS, LeaveRetries } from '../src/signaling/leave-retries'
import { whileAdvancing } from './helpers/fake-time'

/*
 * Leaves the store missed (src/signaling/leave-retries.ts), on the fake
 * cluster: the peer has left once its room was told; the shared room's member
 * list follows once the store answers again, so no ghost member stays, and a
 * rejoin in the meantime is never undone by the retried leave.
 */

/** How many leaves the node's store is asked for while `ms` pass (the store answering from now on). */
async function leavesAfter (c: FakeCluster, node: string, ms: number): Promise<number> {
  const store = c.get(node).store
  const leaveRoom = store.leaveRoom.bind(store)
  let calls = 0
  store.leaveRoom = async (roomId, peerId) => {
    calls++
    return await leaveRoom(roomId, peerId)
  }
  await c.advance(ms)
  return calls
}

t.test('a leave the store missed is retried every 2 s until the shared room no longer lists the peer', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  c.intercept('n1', 'leaveRoom', boom)
  a.send('leave', { roomId: 'r' }, 'l')
  await c.settle()
  t.same(a.frames('leaveResponse').map(f => f.data), [{ success: true, roomId: 'r' }], 'the leave succeeds for the client')
  t.same(b.frames('peer-disconnected').map(f => f.data.peerId), [a.peerId], 'the room is told at once')
  t.same(c.members('r').map(m => m.peerId).sort(), [a.peerId, b.peerId].sort(), 'the store still lists the peer')

  c.intercept('n1', 'leaveRoom', boom) // still down at the first retry
  await c.advance(LEAVE_RETRY_MS)
  t.same(c.members('r').map(m => m.peerId).sort(), [a.peerId, b.peerId].sort(), 'still listed while the store fails')

  await c.advance(LEAVE_RETRY_MS)
  t.same(c.members('r').map(m => m.peerId), [b.peerId], 'the retry landed: only b is listed')
  t.equal(await leavesAfter(c, 'n1', 3 * LEAVE_RETRY_MS), 0, 'nothing more is retried')
  t.same(b.frames('peer-disconnected').length, 1, 'the room heard of the leave once')
})

t.test('a rejoin before the retry is not undone by the leave the store missed', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  c.intercept('n1', 'leaveRoom', boom)
  a.send('leave', { roomId: 'r' }, 'l')
  await c.settle()
  t.same(await join(t, c, a, 'r'), [b.peerId], 'rejoined')
  await c.advance(3 * LEAVE_RETRY_MS)
  t.same(c.members('r').map(m => m.peerId).sort(), [a.peerId, b.peerId].sort(), 'the peer stays listed after the retry time')
  t.equal(await leavesAfter(c, 'n1', 3 * LEAVE_RETRY_MS), 0, 'no retry left')
  b.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'v=0 #1' } })
  await c.settle()
  t.equal(a.frames('offer').length, 1, 'and is reachable')
})

t.test('leaves of several peers are retried together; one that fails keeps the rest for the next round', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'])
  const d = c.connect('n1')
  await join(t, c, d, 'r')
  c.intercept('n1', 'leaveRoom', boom)
  c.intercept('n1', 'leaveRoom', boom)
  a.send('leave', { roomId: 'r' })
  d.send('leave', { roomId: 'r' })
  await c.settle()
  t.equal(c.members('r').length, 3, 'both still listed')
  c.intercept('n1', 'leaveRoom', boom) // the first retry of the round fails: the round stops there
  await c.advance(LEAVE_RETRY_MS)
  t.equal(c.members('r').length, 3, 'nothing landed in a round that failed')
  await c.advance(LEAVE_RETRY_MS)
  t.same(c.members('r').map(m => m.peerId), [b.peerId], 'both landed in the next round')
})

t.test('at most 10 000 unfinished leaves are kept; stop() cancels the retry', async (t) => {
  const clock = new FakeClock()
  const retries = new LeaveRetries({ clock: clock.forNode('n'), isIn: () => false, mesh: { leaveRoom: boom } })
  for (let i = 0; i < 10_005; i++) retries.add('r', `p${i}`)
  t.equal(retries.size, 10_000, 'the rest is left to the room\'s TTL')
  t.equal(clock.pending(), 1, 'one retry armed for all of them')
  retries.stop()
  t.equal(clock.pending(), 0, 'stopped: no retry is armed')
})

t.test('a peer that is in the room here again when the retry runs is not removed from it', async (t) => {
  const clock = new FakeClock()
  const calls: string[] = []
  const retries = new LeaveRetries({
    clock: clock.forNode('n'),
    isIn: (peerId) => peerId === 'back',
    mesh: { leaveRoom: async (roomId, peerId) => { calls.push(`${roomId}/${peerId}`); return true } }
  })
  retries.add('r', 'gone')
  retries.add('r', 'back')
  clock.takeDue(clock.now() + LEAVE_RETRY_MS)?.fn()
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
  t.same(calls, ['r/gone'], 'only the peer that is gone is removed')
  t.equal(retries.size, 0, 'both settled')
  t.equal(clock.pending(), 0, 'nothing re-armed')
})

t.test('an instance that has shut down and left the fleet stops retrying leaves', async (t) => {
  const { c, a } = await pair(t, ['n1', 'n2'])
  const n1 = c.get('n1')
  c.intercept('n1', 'leaveRoom', boom)
  a.send('leave', { roomId: 'r' })
  await c.settle()
  await whileAdvancing(c, n1.hub.shutdown(100))
  await whileAdvancing(c, n1.hub.drain(100))
  t.equal(await leavesAfter(c, 'n1', 3 * LEAVE_RETRY_MS), 0, 'no store call after the drain')
})
