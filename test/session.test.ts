import t from 'tap'
import { Session } from '../src/signaling/session'
import { Connection } from '../src/signaling/connection'
import { FakeClock, FakeTransport, silentLogger } from './helpers/fake-mesh'
import type { Logger } from '../src/signaling/types'

/*
 * The session state machine (src/signaling/session.ts) on its own: every
 * transition, what it does to the session's timers, and that a transition
 * out of a final state is refused (logged, never thrown).
 */

const LIMITS = { ratePerS: 10, rateBurst: 10, abuseMaxDrops: 100 }

function setup (): { clock: FakeClock, session: Session, errors: unknown[], conn: (ip?: string) => Connection, fire: (ms: number) => void } {
  const clock = new FakeClock()
  const errors: unknown[] = []
  const base = silentLogger()
  const log: Logger = { ...base, child: () => log, error: (...args: unknown[]) => { errors.push(args) } }
  const session = new Session('p1', Buffer.from('secret'), '192.0.2.1', { clock: clock.forNode('n'), log })
  const conn = (ip = '192.0.2.9'): Connection => new Connection(new FakeTransport(), ip, LIMITS, 0)
  const fire = (ms: number): void => {
    const until = clock.now() + ms
    for (let timer = clock.takeDue(until); timer !== null; timer = clock.takeDue(until)) timer.fn()
    clock.set(until)
  }
  return { clock, session, errors, conn, fire }
}

t.test('new → connected → held → connected: the grace is cancelled by the resume', async (t) => {
  const { clock, session, conn, fire } = setup()
  t.equal(session.state, 'new')
  const first = conn('198.51.100.7')
  t.equal(session.attach(first), null, 'nothing replaced')
  t.equal(session.state, 'connected')
  t.equal(session.ip, '198.51.100.7', 'the connection\'s address counts from now on')
  t.equal(session.detach(first), true)
  t.equal(session.conn, null)
  let expired = 0
  session.hold(1000, () => { expired++ })
  t.equal(session.state, 'held')
  t.equal(session.waiting, true)
  const second = conn()
  t.equal(session.attach(second), null)
  t.equal(session.state, 'connected')
  t.equal(session.waiting, false, 'the grace timer is gone')
  t.equal(clock.pending(), 0)
  fire(5000)
  t.equal(expired, 0, 'a resumed session never expires')
})

t.test('a connection that takes over a half-open one gets it back to close; a replaced connection\'s close is ignored', async (t) => {
  const { session, conn } = setup()
  const a = conn()
  const b = conn()
  session.attach(a)
  t.equal(session.attach(b), a, 'the old connection is handed back')
  t.equal(session.detach(a), false, 'not its connection any more')
  t.equal(session.conn, b)
})

t.test('held → ending → ended when the grace expires', async (t) => {
  const { session, conn, fire } = setup()
  session.attach(conn())
  session.enterRoom('r1')
  let expired = 0
  session.hold(1000, () => {
    expired++
    t.equal(session.end(), true, 'ending')
  })
  fire(999)
  t.equal(expired, 0)
  fire(1)
  t.equal(expired, 1)
  t.equal(session.state, 'ending')
  t.equal(session.ended, true)
  t.equal(session.end(), false, 'ending twice is refused')
  session.finish()
  t.equal(session.state, 'ended')
  t.equal(session.moved, false)
})

t.test('ending → awaiting the release → moved', async (t) => {
  const { session, conn, fire, errors } = setup()
  session.attach(conn())
  session.end()
  let missed = 0
  session.awaitRelease(5000, () => { missed++ })
  t.equal(session.waiting, true)
  fire(5000)
  t.equal(missed, 1, 'the release never came')
  session.letGo()
  t.equal(session.state, 'moved')
  t.equal(session.moved, true)
  t.equal(session.ended, true)
  t.same(errors, [])
})

t.test('awaitRelease outside of ending is refused and logged', async (t) => {
  const { session, conn, errors, clock } = setup()
  session.attach(conn())
  session.awaitRelease(5000, () => {})
  t.equal(errors.length, 1)
  t.equal(clock.pending(), 0, 'no timer started')
})

t.test('transitions out of a final state are refused and logged, never thrown', async (t) => {
  const { session, conn, errors, clock } = setup()
  session.letGo()
  t.equal(session.attach(conn()), false)
  session.hold(1000, () => {})
  t.equal(session.state, 'moved')
  t.equal(clock.pending(), 0)
  t.equal(errors.length, 2)
})

t.test('letGo and finish stop every timer (grace, release wait, handover wait)', async (t) => {
  const { session, clock, fire } = setup()
  let fired = 0
  session.hold(1000, () => { fired++ })
  session.awaitHandover(2000, null, () => { fired++ })
  t.equal(clock.pending(), 2)
  session.letGo()
  t.equal(clock.pending(), 0)
  fire(10_000)
  t.equal(fired, 0)

  const other = setup()
  other.session.awaitHandover(2000, null, () => {})
  other.session.end()
  t.equal(other.clock.pending(), 0, 'ending stops the handover wait')
  other.session.finish()
  t.equal(other.clock.pending(), 0)
})

t.test('the handover wait: arrives in time, arrives late, or times out', async (t) => {
  const { session, fire } = setup()
  const parked = { baseline: [], held: [] }
  session.awaitHandover(2000, parked, () => t.fail('no timeout after the handover'))
  t.same(session.handoverArrived(), { parked }, 'in time: what the claim took along')
  t.equal(session.handoverArrived(), undefined, 'a second one is late')
  fire(3000)

  let timedOut = 0
  session.awaitHandover(2000, null, () => { timedOut++ })
  session.awaitHandover(2000, null, () => { timedOut += 10 })
  fire(2000)
  t.equal(timedOut, 10, 'a new wait replaces the previous one')
  t.equal(session.handoverArrived(), undefined, 'after the timeout, a handover is late')
})

t.test('epoch, record, secret, room and outbound sequences', async (t) => {
  const { session } = setup()
  t.equal(session.epoch, 0)
  t.equal(session.recorded, false)
  session.recordedByJoin()
  t.equal(session.recorded, true)
  session.claimed(3)
  t.equal(session.epoch, 3, 'the epoch comes from the claim')
  session.rotate(Buffer.from('other'))
  t.equal(session.secretHash.toString(), 'other')
  session.enterRoom('r1')
  t.equal(session.roomId, 'r1')
  t.same([session.nextSeq('a'), session.nextSeq('a'), session.nextSeq('b')], [1, 2, 1], 'per target')
  session.inbox.seqFrom = new Map([['x', { epoch: 0, next: 5, floor: 1, holes: new Set([3]), emitted: 4 }]])
  t.same(session.inbox.baseline(), [['x', 0, 5, 1, [3]]])
  session.exitRoom()
  t.equal(session.roomId, null)
  t.same(session.inbox.baseline(), [], 'what it expected from senders goes with the room')
  t.equal(session.nextSeq('a'), 3, 'its own outbound counters stay (receivers remember them)')
  t.match(session.log, { info: Function })
})
