import t from 'tap'
import { FakeClock, FakeTransport, silentLogger } from './helpers/fake-mesh'
import { Connection, ConnectionRegistry, type ServerCloseReason } from '../src/signaling/connection'
import { Session } from '../src/signaling/session'

/*
 * One WebSocket connection and the instance's set of them
 * (src/signaling/connection.ts): the close code a client sees for each reason
 * the server ends it, whether its session is held for resume, the per-IP
 * count the connection cap reads, the token bucket and the heartbeat sweep.
 */

const LIMITS = { ratePerS: 10, rateBurst: 5, abuseMaxDrops: 3 }

function conn (ip = '192.0.2.1', limits = LIMITS): Connection {
  return new Connection(new FakeTransport(), ip, limits, 0)
}

function withSession (c: Connection, peerId: string): Connection {
  const clock = new FakeClock()
  c.session = new Session(peerId, Buffer.alloc(32), c.ip, { clock: clock.forNode('n'), log: silentLogger() })
  return c
}

t.test('each reason the server ends a connection gives the client its close code; the first reason wins', async (t) => {
  const cases: Array<[ServerCloseReason, FakeTransport['serverClose'], boolean]> = [
    ['abuse', { code: 1008, reason: 'message rate far above limit' }, false],
    ['replaced', { code: 4000, reason: 'replaced' }, false],
    ['shutdown', { code: 1001, reason: 'server shutting down' }, true],
    ['evicted', { code: 1012, reason: 'instance cut off: resume elsewhere' }, true],
    ['retry', { code: 1013, reason: 'session lookup failed: resume again shortly' }, false],
    ['heartbeat', 'terminated', true],
    ['oversize', 'terminated', false]
  ]
  for (const [reason, close, held] of cases) {
    const c = conn()
    t.equal(c.writable, true)
    c.end(reason)
    c.end('abuse')
    const transport = c.transport as FakeTransport
    t.same(transport.serverClose, close, `${reason}: ${JSON.stringify(close)}`)
    t.equal(c.writable, false, `${reason}: nothing is written after the server ended it`)
    t.equal(c.closeReason, reason, `${reason}: counted under its own reason, not the second one`)
    t.equal(c.holdsSession, held, `${reason}: ${held ? 'held for resume' : 'over'}`)
  }
})

t.test('a client\'s close: 1000, 1001 and 1005 end the session; anything else (or no code) holds it', async (t) => {
  for (const code of [1000, 1001, 1005]) {
    const c = conn()
    c.closedCode = code
    t.equal(c.closeReason, 'client', `${code}`)
    t.equal(c.holdsSession, false, `${code}: over`)
    t.equal(c.writable, false)
  }
  for (const code of [1006, 1011, 4001, null]) {
    const c = conn()
    c.closedCode = code
    t.equal(c.closeReason, 'dropped', `${code}`)
    t.equal(c.holdsSession, true, `${code}: held for resume`)
  }
})

t.test('token bucket: the burst passes, then the rate; sustained drops within 10 s are abuse, older ones are forgotten', async (t) => {
  const c = conn()
  const at = (now: number, n: number): string[] => Array.from({ length: n }, () => c.admit(now))
  t.same(at(0, 5), ['ok', 'ok', 'ok', 'ok', 'ok'], 'the burst')
  t.same(at(0, 2), ['drop', 'drop'], 'then dropped')
  t.equal(c.dropCount, 2)
  t.same(at(100, 2), ['ok', 'abuse'], '10/s: one token after 100 ms; the third drop within 10 s (abuseMaxDrops) is abuse')
  t.equal(c.dropCount, 3)

  const d = conn()
  for (let i = 0; i < 5; i++) d.admit(0)
  t.same([d.admit(0), d.admit(0)], ['drop', 'drop'])
  // 10.001 s later the bucket is full again; empty it and drop once more.
  for (let i = 0; i < 5; i++) t.equal(d.admit(10_001), 'ok')
  t.equal(d.admit(10_001), 'drop', 'one drop: the two of 10 s ago no longer count')
  t.equal(d.dropCount, 1)
})

t.test('connections per IP: counted on add, uncounted once on remove', async (t) => {
  const registry = new ConnectionRegistry(3)
  const [a1, a2, b1] = [conn('192.0.2.1'), conn('192.0.2.1'), conn('192.0.2.2')]
  for (const c of [a1, a2, b1]) registry.add(c)
  t.equal(registry.size, 3)
  t.equal(registry.from('192.0.2.1'), 2)
  t.equal(registry.from('192.0.2.2'), 1)
  t.equal(registry.from('198.51.100.9'), 0, 'an IP never seen')
  registry.remove(a1)
  registry.remove(a1)
  t.equal(registry.from('192.0.2.1'), 1, 'a second remove of the same connection changes nothing')
  registry.remove(b1)
  t.equal(registry.from('192.0.2.2'), 0)
  t.same([...registry], [a2])
  registry.remove(conn('192.0.2.1'))
  t.equal(registry.from('192.0.2.1'), 1, 'removing a connection never added changes nothing')
})

t.test('heartbeat sweep: slices in turn; only live sessions are pinged; two missed pongs hand the connection back', async (t) => {
  const registry = new ConnectionRegistry(2)
  t.equal(registry.slices, 2)
  const a = withSession(conn(), 'a') // slice 0
  const b = withSession(conn(), 'b') // slice 1
  const greeting = conn() // slice 0: no session yet (a resume still being looked up)
  const closing = withSession(conn(), 'c') // slice 1
  for (const c of [a, b, greeting, closing]) registry.add(c)
  closing.end('replaced')
  const pings = (c: Connection): number => (c.transport as FakeTransport).pings

  t.same(registry.sweepSlice(), { dead: [], roundStarted: true })
  t.same([pings(a), pings(b), pings(greeting)], [1, 0, 0], 'the first slice pings its share, not a connection without a session')
  t.same(registry.sweepSlice(), { dead: [], roundStarted: false })
  t.same([pings(a), pings(b), pings(closing)], [1, 1, 0], 'the second slice; not a connection the server is closing')

  b.awaitingPongs = 0 // b answered
  registry.sweepSlice()
  registry.sweepSlice()
  t.same([a.awaitingPongs, b.awaitingPongs], [2, 1])
  const round = registry.sweepSlice()
  t.same(round.dead, [a], 'a missed two pongs')
  t.equal(round.roundStarted, true)
  t.equal(pings(a), 2, 'and is not pinged again')
})
