import t, { type Test } from 'tap'
import type { LogFn } from 'pino'
import { boom, DEFAULT_LIMITS, FakeClock, FakeMetrics, FakeTransport, join, pair, silentLogger } from './helpers/fake-mesh'
import { createMemoryStore } from '../src/store/memory'
import { createLocalMesh } from '../src/signaling/mesh'
import { createSignalingHub, type HubOptions } from '../src/signaling/hub'
import { systemClock, type HubLimits, type Logger } from '../src/signaling/types'

/*
 * The hub's own options and API (src/signaling/hub.ts) on one instance
 * (createLocalMesh + createMemoryStore), and the heartbeat behind a closed
 * fence on the fake cluster: the defaults a plugin may leave out, the count
 * the fleet-wide connection cap hears of, the lookup of a session held on
 * another instance, held sessions kept while Redis is unreachable.
 */

interface Line { level: string, obj: Record<string, unknown>, msg: string | undefined }

/** A logger that keeps every line (children write into the same list with their bindings). */
function recordingLogger (lines: Line[], bindings: Record<string, unknown> = {}): Logger {
  const at = (level: string): LogFn => ((obj: unknown, msg?: string) => {
    if (typeof obj === 'string') lines.push({ level, obj: { ...bindings }, msg: obj })
    else lines.push({ level, obj: { ...bindings, ...(obj as Record<string, unknown>) }, msg })
  }) as LogFn
  return { child: (more) => recordingLogger(lines, { ...bindings, ...more }), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

/** One instance on the fake clock (or, with `systemTime`, on the hub's default clock). */
function localHub (t: Test, opts: Partial<Omit<HubOptions, 'limits'>> & { limits?: Partial<HubLimits>, systemTime?: boolean } = {}) {
  const { systemTime, ...hubOpts } = opts
  const clock = new FakeClock()
  const store = createMemoryStore({ instanceId: 'solo', roomTtlS: 86400, roomEmptyTtlS: 900, joinLimitMax: 2, joinLimitWindowMs: 60_000, trackMaxRefsPerDay: 1000, now: () => clock.now() })
  t.teardown(() => store.close())
  const hub = createSignalingHub({
    store,
    mesh: createLocalMesh(store, 'solo'),
    log: silentLogger(),
    iceServers: () => [],
    metrics: new FakeMetrics(),
    ...(systemTime === true ? {} : { clock: clock.forNode('solo') }),
    ...hubOpts,
    limits: { ...DEFAULT_LIMITS, ...opts.limits }
  })
  const open = (ip = '192.0.2.1') => {
    const transport = new FakeTransport()
    transport.handle = hub.open(transport, { ip })
    return transport
  }
  const send = (transport: FakeTransport, type: string, data: unknown, id?: string) => transport.handle?.message(JSON.stringify({ type, data, id }), false)
  const settle = async () => { for (let i = 0; i < 10; i++) await new Promise(resolve => setImmediate(resolve)) }
  const advance = async (ms: number) => {
    const until = clock.now() + ms
    for (let timer = clock.takeDue(until); timer !== null; timer = clock.takeDue(until)) {
      timer.fn()
      await settle()
    }
    clock.set(until)
  }
  return { hub, store, open, send, settle, advance }
}

t.test('a hub built with no clock runs on the system clock, whose timers never keep the process alive', async (t) => {
  const { hub, store, open, send, settle } = localHub(t, { systemTime: true })
  await store.createRoom('r')
  const a = open()
  send(a, 'join', { roomId: 'r' }, 'j')
  await settle()
  t.same(a.received.map(f => f.type), ['welcome', 'joinResponse'])
  t.match(hub.fenceStats(), { stalls: 0, linkLosses: 0, closed: false }, 'a single instance has no fence')
  a.handle?.message(Buffer.from(JSON.stringify({ type: 'ping' })), false) // a text frame given as a Buffer
  await settle()
  t.same(a.received.at(-1), { type: 'pong', data: {} })
  a.readyState = 3
  a.complete(1006) // dropped: held for resume on the system clock's grace timer
  await settle()
  t.equal(hub.heldSessions(), 1)
  await hub.shutdown(0)

  const fired: string[] = []
  const timer = systemClock.setTimeout(() => fired.push('fired'), 60_000)
  t.equal(timer.hasRef(), false, 'unref\'d')
  systemClock.clearTimeout(timer)
  t.ok(Math.abs(systemClock.now() - Date.now()) < 1_000)
  t.same(fired, [])
})

t.test('the fleet-wide connection cap hears of every change of an IP\'s count here', async (t) => {
  const changed: string[] = []
  const { hub, store, open, send, settle } = localHub(t, { countChanged: ip => changed.push(ip) })
  await store.createRoom('r')
  const a = open('192.0.2.7')
  send(a, 'join', { roomId: 'r' })
  await settle()
  t.equal(hub.connectionsFrom('192.0.2.7'), 1)
  a.readyState = 3
  a.complete(1006)
  await settle()
  t.equal(hub.connectionsFrom('192.0.2.7'), 1, 'a session held for resume still counts')
  t.ok(changed.length >= 1 && changed.every(ip => ip === '192.0.2.7'), `told of 192.0.2.7 (${changed.length} times)`)
  await hub.shutdown(0)
})

t.test('cut off from Redis, a held session outlives its grace; once Redis is back it ends and the room hears of it', async (t) => {
  let healthy = true
  const lines: Line[] = []
  const { hub, store, open, send, settle, advance } = localHub(t, { linkHealthy: () => healthy, log: recordingLogger(lines), limits: { resumeGraceMs: 10_000 } })
  await store.createRoom('r')
  const a = open()
  const b = open()
  send(a, 'join', { roomId: 'r' })
  send(b, 'join', { roomId: 'r' })
  await settle()
  const peerA = a.received[0]?.data.peerId
  a.readyState = 3
  a.complete(1006)
  await settle()
  healthy = false
  await advance(10_000)
  await advance(5_000)
  t.equal(hub.heldSessions(), 1, 'still held 5 s past its grace: it may have resumed on an instance that can reach Redis')
  t.same(b.received.filter(f => f.type === 'peer-disconnected'), [], 'the room is not told')
  healthy = true
  await advance(1_000)
  t.equal(hub.heldSessions(), 0, 'ended at the next check once Redis answers')
  t.same(b.received.filter(f => f.type === 'peer-disconnected').map(f => f.data.peerId), [peerA], 'the room hears of it once')
  t.same(lines.filter(l => l.msg === 'resume grace expired').map(l => l.obj.peerId), [peerA], 'one log line, naming the peer')
  await hub.shutdown(0)
})

t.test('the instance that holds the session a resume token names, when it is another one', async (t) => {
  const { c, a } = await pair(t, ['n1', 'n2'])
  const [n1, n2] = [c.get('n1'), c.get('n2')]
  t.equal(await n2.hub.heldElsewhere(a.token), 'n1', 'held on n1: the upgrade on n2 can be sent there')
  t.equal(await n1.hub.heldElsewhere(a.token), null, 'served here')
  t.equal(await n2.hub.heldElsewhere('not-a-token'), null, 'a malformed token names nothing')
  t.equal(await n2.hub.heldElsewhere(`nobody.${a.token.split('.')[1] ?? ''}`), null, 'a token of no session')
  c.intercept('n2', 'readSession', boom)
  t.equal(await n2.hub.heldElsewhere(a.token), null, 'Redis not answering: nothing known')
  const d = c.connect('n2')
  await join(t, c, d, 'r')
  d.close()
  await c.settle()
  t.equal(await n1.hub.heldElsewhere(d.token), null, 'a session that ended is held nowhere')
})

t.test('behind a fence closed by a stall, the heartbeat passes no verdict until ownership is settled', async (t) => {
  const { c, a, b } = await pair(t, ['n1', 'n2'], { limits: { stallCheckMs: 1_000 } })
  const n1 = c.get('n1')
  n1.hub.heartbeat()
  n1.hub.heartbeat() // a answers none: two pongs missed
  t.equal(a.transport.pings, 2)
  c.clock.set(c.clock.now() + 5_000) // the event loop stalled
  a.send('ping', undefined, 'p') // the first input after the stall closes the fence
  t.match(n1.hub.fenceStats(), { stalls: 1, closed: true })
  n1.hub.heartbeat()
  t.equal(a.transport.serverClose, null, 'not terminated: its pongs may be among the inputs read during the stall')
  t.equal(a.transport.pings, 2, 'and not pinged')
  await c.advance(100)
  t.match(n1.hub.fenceStats(), { closed: false }, 'ownership settled')
  t.same(a.frames('pong').map(f => f.id), ['p'], 'the input that waited ran')
  n1.hub.heartbeat()
  t.equal(a.transport.serverClose, 'terminated', 'two pongs missed: terminated')
  await c.settle()
  t.equal(b.frames('peer-disconnected').length, 0, 'held for resume: the room is not told')
})
