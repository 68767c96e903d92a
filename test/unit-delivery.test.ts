import t from 'tap'
import { FakeClock, FakeMetrics, FakeTransport, silentLogger } from './helpers/fake-mesh'
import { createDelivery, GAP_WAIT_MS } from '../src/signaling/delivery'
import { Connection } from '../src/signaling/connection'
import { Session } from '../src/signaling/session'
import { LogLimiter } from '../src/signaling/log-limiter'
import type { Envelope } from '../src/signaling/bus'

/*
 * Delivery to one peer (src/signaling/delivery.ts and its Inbox), driven
 * directly with envelopes as they reach the target's instance: what the
 * client receives and in which order, which frames their senders hear
 * refused (`unavailable`: newer frames overtook them; `peer_not_found`: never
 * delivered), and which are dropped as repeats.
 */

function setup (opts: { resumeBufferMax?: number, maxBufferedBytes?: number } = {}) {
  const fake = new FakeClock()
  const clock = fake.forNode('n')
  const metrics = new FakeMetrics()
  const refused: string[] = []
  const delivery = createDelivery({
    clock,
    metrics,
    resumeBufferMax: opts.resumeBufferMax ?? 50,
    resumeBufferBytes: 1 << 20,
    maxBufferedBytes: opts.maxBufferedBytes ?? 1 << 20,
    warnings: new LogLimiter(clock),
    undeliverable: env => refused.push(`peer_not_found ${env.id}`),
    outOfOrder: env => refused.push(`unavailable ${env.id}`)
  })
  const transport = new FakeTransport()
  const session = new Session('target', Buffer.alloc(32), '192.0.2.1', { clock, log: silentLogger() })
  session.attach(new Connection(transport, '192.0.2.1', { ratePerS: 1, rateBurst: 1, abuseMaxDrops: 1 }, 0))
  /** A relay from `from` (epoch, seq); its id names it, e.g. a1.7 for epoch 1, seq 7. */
  const env = (from: string, epoch: number, seq: number): Envelope => {
    const id = `${from}${epoch}.${seq}`
    return { frame: JSON.stringify({ type: 'offer', data: { id } }), type: 'offer', from, id, epoch, seq, origin: 'n2' }
  }
  const send = (from: string, epoch: number, ...seqs: number[]) => { for (const seq of seqs) delivery.deliver(session, env(from, epoch, seq)) }
  /** The ids the client received, in order. */
  const got = (): string[] => transport.received.map(f => f.data.id)
  const advance = (ms: number) => {
    const until = fake.now() + ms
    for (let timer = fake.takeDue(until); timer !== null; timer = fake.takeDue(until)) timer.fn()
    fake.set(until)
  }
  return { fake, metrics, refused, delivery, transport, session, env, send, got, advance }
}

t.test('in order per sender: a repeat is dropped, a late frame that newer ones overtook is refused', async (t) => {
  const { metrics, refused, send, got } = setup()
  send('a', 1, 1, 2, 4) // 3 skipped (no move in progress: no wait)
  send('a', 1, 3, 2)
  t.same(got(), ['a1.1', 'a1.2', 'a1.4'])
  t.same(refused, ['unavailable a1.3'], 'the late 3 would arrive after 4: refused to its sender')
  t.equal(metrics.count('duplicate'), 1, 'the repeat of 2 is dropped')
  send('a', 0, 9)
  t.same(refused.at(-1), 'unavailable a0.9', 'a frame of the sender\'s older epoch, after its newer one arrived')
  send('b', 0, 0)
  t.same(got().at(-1), 'b0.0', 'an unsequenced frame goes straight through')
})

t.test('a jump of more than 256: everything below it is unknown; late frames from there are refused, not delivered out of order', async (t) => {
  const { metrics, refused, send, got } = setup()
  send('a', 1, 1, 300)
  send('a', 1, 5, 299, 300)
  t.same(got(), ['a1.1', 'a1.300'])
  t.same(refused, ['unavailable a1.5', 'unavailable a1.299'])
  t.equal(metrics.count('duplicate'), 1, '300 again: a repeat')
})

t.test('more than 256 holes in all: the oldest are forgotten, late frames from them still refused', async (t) => {
  const { metrics, refused, send, got } = setup()
  const odd = Array.from({ length: 300 }, (_, i) => 2 * i + 1) // 1, 3, …, 599: holes 2, 4, …, 598
  send('a', 1, ...odd)
  t.equal(got().length, 300)
  send('a', 1, 2, 598, 597)
  t.same(refused, ['unavailable a1.2', 'unavailable a1.598'], 'the oldest hole (forgotten) and the newest (known) are refused alike')
  t.equal(metrics.count('duplicate'), 1, '597 went out already')
})

t.test('shortly after a move, a frame ahead of a gap waits for the missing one, at most a second', async (t) => {
  const { metrics, refused, delivery, session, send, got, advance, env } = setup()
  delivery.openGate(session, null) // never closed: nothing waited at the gate
  send('a', 1, 1, 3, 3)
  t.same(got(), ['a1.1'], '3 waits for 2')
  t.equal(metrics.count('duplicate'), 1, 'a second 3 while it waits is a repeat')
  send('a', 1, 2)
  t.same(got(), ['a1.1', 'a1.2', 'a1.3'], '2 arrived: both go out, in order')

  send('a', 1, 5, 6)
  delivery.lateHandover(session, [env('a', 1, 5)]) // 5 also came by the handover
  t.same(got().slice(3), ['a1.5'], 'the handover\'s 5 goes out (taken once from the old instance\'s buffer)')
  advance(GAP_WAIT_MS)
  t.same(got().slice(3), ['a1.5', 'a1.6'], 'after the wait: 6, and 5 waiting behind the gap is not sent twice')
  t.equal(metrics.count('duplicate'), 2)

  send('a', 1, 9)
  advance(GAP_WAIT_MS)
  t.same(got().slice(-1), ['a1.9'], 'nothing came for 7 and 8 within the wait: 9 goes out')
  send('a', 1, 8)
  t.same(refused, ['unavailable a1.8'])
})

t.test('a frame that waited behind a gap goes out before a frame that arrives after the reconciliation window', async (t) => {
  const { delivery, session, send, got, advance } = setup()
  delivery.openGate(session, null)
  send('a', 1, 1, 3)
  advance(2_999) // the gap timer fired at 1 s: 3 went out
  t.same(got(), ['a1.1', 'a1.3'])
  send('a', 1, 5)
  advance(1) // the window is over
  send('a', 1, 7)
  t.same(got(), ['a1.1', 'a1.3', 'a1.5', 'a1.7'], 'in order')
})

t.test('a sender\'s new epoch resets its sequence, and what waited from its old one is dropped', async (t) => {
  const { delivery, session, send, got, advance, fake } = setup()
  delivery.openGate(session, null)
  send('a', 1, 1, 3)
  send('a', 2, 1)
  advance(GAP_WAIT_MS)
  t.same(got(), ['a1.1', 'a2.1'], 'the old epoch\'s 3 never goes out after the new epoch\'s 1')
  t.equal(fake.pending(), 0)
})

t.test('a handover: what the old instance held goes out first, then what waited at the gate, per sender in sequence', async (t) => {
  const { refused, metrics, delivery, session, send, got, env } = setup()
  send('a', 1, 1, 2, 3, 4, 5) // a is at 6 here already
  send('c', 1, 1)
  delivery.closeGate(session)
  send('b', 2, 9, 8) // at the gate, out of order
  send('a', 1, 6)
  t.same(got().length, 6, 'nothing passes the closed gate')
  delivery.openGate(session, {
    baseline: [
      ['a', 1, 3, 0, []], // older than what is known here: ignored
      ['b', 2, 8, 5, [6]], // new here: adopted (6 was skipped there)
      ['c', 2, 4, 4, []] // a newer epoch of c
    ],
    held: [env('b', 2, 7), env('x', 0, 0), env('c', 1, 2)]
  })
  t.same(got().slice(6), ['b2.7', 'x0.0', 'c1.2', 'b2.8', 'b2.9', 'a1.6'], 'held first, then the gate in sequence per sender')
  send('a', 1, 4)
  send('b', 2, 6, 4)
  t.same(refused, ['unavailable b2.6', 'unavailable b2.4'], 'b\'s hole and floor came from the handover')
  t.equal(metrics.count('duplicate'), 1, 'a\'s 4: a repeat, a kept its own baseline')
})

t.test('a late handover: its frames are taken through the sequence check', async (t) => {
  const { refused, delivery, session, send, got, env } = setup()
  send('a', 2, 1, 2, 5) // 3 and 4 skipped
  delivery.lateHandover(session, [
    env('a', 1, 9), // an older epoch: overtaken
    env('a', 2, 2), // went out already
    env('a', 2, 4), // a hole, and newer than what went out? no: 5 went out
    env('a', 3, 1), // a newer epoch: a fresh baseline
    env('n', 1, 1), // a sender never seen here
    env('u', 0, 0) // unsequenced
  ])
  t.same(got(), ['a2.1', 'a2.2', 'a2.5', 'a3.1', 'n1.1', 'u0.0'])
  t.same(refused, ['unavailable a1.9', 'unavailable a2.2', 'unavailable a2.4'])

  send('b', 1, 1, 4) // 2 and 3 skipped; nothing newer than 4 went out
  delivery.lateHandover(session, [env('b', 1, 5), env('b', 1, 6)])
  t.same(got().slice(6), ['b1.1', 'b1.4', 'b1.5', 'b1.6'], 'in order after what went out: delivered')
  send('b', 1, 3, 6, 7)
  t.same(got().slice(-1), ['b1.7'], '7 follows 6')
  t.same(refused.slice(3), ['unavailable b1.3'], 'a hole still known is refused; 6 is a repeat')

  delivery.closeGate(session)
  delivery.lateHandover(session, [env('b', 1, 8)])
  t.same(got().slice(-1), ['b1.7'], 'behind a closed gate a late handover waits too')
  delivery.openGate(session, null)
  t.same(got().slice(-1), ['b1.8'])
})

t.test('a late handover with a gap: a frame of the gap arriving afterwards is refused to its sender, not dropped unannounced (a bug found by this test: the gap was not recorded)', async (t) => {
  const { refused, metrics, delivery, session, send, got, env } = setup()
  send('b', 1, 1, 2, 3, 4)
  // The old instance held 5 and 7 (6 reaches the peer by the longer path, forwarded).
  delivery.lateHandover(session, [env('b', 1, 5), env('b', 1, 7)])
  t.same(got(), ['b1.1', 'b1.2', 'b1.3', 'b1.4', 'b1.5', 'b1.7'])
  send('b', 1, 6)
  t.same(got().slice(-1), ['b1.7'], '6 is not delivered after 7')
  t.same(refused, ['unavailable b1.6'], 'its sender hears unavailable (not applied: safe to resend)')
  t.equal(metrics.count('duplicate'), 0, 'it was never delivered: not a repeat')
})

t.test('a slow reader: frames wait while its socket is full and go out as it drains; a handover takes them all, in order', async (t) => {
  const { fake, delivery, session, transport, send, got, advance, refused } = setup({ maxBufferedBytes: 100 })
  send('a', 1, 1)
  transport.bufferedAmount = 1_000 // the client reads slowly
  send('a', 1, 2, 3)
  t.same(got(), ['a1.1'], 'waiting while the socket is full')
  advance(50)
  t.same(got(), ['a1.1'])
  transport.bufferedAmount = 0
  advance(10)
  t.same(got(), ['a1.1', 'a1.2', 'a1.3'], 'sent as it drains')

  transport.bufferedAmount = 1_000
  send('a', 1, 4)
  delivery.openGate(session, null)
  send('a', 1, 6) // waits for 5
  delivery.closeGate(session)
  send('b', 1, 1)
  const taken = delivery.takeHeld(session)
  t.same(taken.map(e => e.id), ['a1.4', 'b1.1', 'a1.6'], 'held, then at the gate, then behind the gap')
  t.equal(fake.pending(), 0, 'no pump or gap timer left')
  t.same(delivery.takeHeld(session), [], 'taken once')
  transport.bufferedAmount = 0
  advance(2_000)
  t.same(got(), ['a1.1', 'a1.2', 'a1.3'], 'nothing more is written here')

  delivery.closeGate(session)
  send('a', 1, 7)
  delivery.discard(session)
  t.same(refused, ['peer_not_found a1.7'], 'a discarded session\'s frames are refused to their senders')
})

t.test('a full resume buffer refuses the newest frame, keeping what was accepted gap-free', async (t) => {
  const { delivery, session, send, got, refused } = setup({ resumeBufferMax: 2 })
  session.conn?.end('heartbeat') // away: frames are held for its resume
  send('a', 1, 1, 2, 3)
  t.same(refused, ['peer_not_found a1.3'])
  t.equal(delivery.flushHeld(session), 2, 'two held for the resume')
  t.same(got(), [], 'the closed socket got nothing')
})
