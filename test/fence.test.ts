import t from 'tap'
import { Fence, type FenceScope } from '../src/signaling/fence'
import { FleetMarker } from '../src/cluster/fleet-marker'
import type { Clock, Logger, TimerHandle } from '../src/signaling/types'

/*
 * The fence (src/signaling/fence.ts) and the fleet marker
 * (src/cluster/fleet-marker.ts), on a hand-driven clock: what waits, in
 * which order it runs, and what a stall, a lost link or a lost registry
 * changes. The real faults run in test/faults-*.test.ts.
 */

interface Timer { at: number, fn: () => void }

function manualClock () {
  let now = 0
  const timers = new Set<Timer>()
  const clock: Clock = {
    now: () => now,
    setTimeout: (fn, ms) => {
      const timer = { at: now + ms, fn }
      timers.add(timer)
      return timer as unknown as TimerHandle
    },
    clearTimeout: (handle) => { timers.delete(handle as unknown as Timer) }
  }
  return {
    clock,
    /** Moves time on without running anything (the loop is frozen). */
    freeze (ms: number) { now += ms },
    /** Runs every timer due by now + ms, in order, moving time with them. */
    advance (ms: number) {
      const until = now + ms
      for (;;) {
        const due = [...timers].filter(x => x.at <= until).sort((a, b) => a.at - b.at)[0]
        if (due === undefined) break
        timers.delete(due)
        now = Math.max(now, due.at)
        due.fn()
      }
      now = until
    },
    pending: () => timers.size
  }
}

const lines: string[] = []
const log: Logger = {
  info: (_o: unknown, m?: string) => { lines.push(`info ${m ?? ''}`) },
  warn: (_o: unknown, m?: string) => { lines.push(`warn ${typeof _o === 'string' ? _o : m ?? ''}`) },
  error: (_o: unknown, m?: string) => { lines.push(`error ${m ?? ''}`) },
  debug: () => {},
  child: () => log
} as unknown as Logger

function setup (opts: { linkHealthy?: () => boolean, verify?: () => Promise<boolean>, queueMax?: number } = {}) {
  const m = manualClock()
  const overflows: FenceScope[] = []
  let verifications = 0
  const fence = new Fence({
    clock: m.clock,
    log,
    stallMs: 1000,
    verify: async () => {
      verifications++
      return await (opts.verify?.() ?? Promise.resolve(true))
    },
    linkHealthy: opts.linkHealthy ?? (() => true),
    queueMax: opts.queueMax ?? 100,
    overflow: scope => { overflows.push(scope) }
  })
  fence.start()
  return { m, fence, overflows, verifications: () => verifications }
}

const flush = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }

t.test('without a stall or a lost link, inputs run at once', async (t) => {
  const { m, fence, verifications } = setup()
  const ran: string[] = []
  for (let i = 0; i < 10; i++) {
    m.advance(300) // the watchdog keeps turning
    fence.run(i % 2 === 0 ? 'client' : 'bus', () => ran.push(String(i)))
  }
  t.same(ran, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
  t.equal(verifications(), 0, 'nothing to check')
  t.equal(fence.stalls, 0)
  fence.stop()
  t.equal(m.pending(), 0, 'stop clears its timers')
})

t.test('an input that arrives after a stall waits, with everything after it, until ownership is checked', async (t) => {
  let release!: (done: boolean) => void
  const { m, fence, verifications } = setup({ verify: () => new Promise(resolve => { release = resolve }) })
  const ran: string[] = []
  m.freeze(8000) // SIGSTOP: no timer ran
  fence.run('bus', () => ran.push('bus 1'))
  fence.run('client', () => ran.push('client 1'))
  fence.run('bus', () => ran.push('bus 2'))
  t.same(ran, [], 'nothing read while frozen is acted on yet')
  t.ok(fence.closed('client') && fence.closed('bus'), 'closed for every input')
  m.advance(0)
  await flush()
  t.equal(verifications(), 1, 'ownership is checked once')
  fence.run('client', () => ran.push('client 2'))
  release(true)
  await flush()
  t.same(ran, ['bus 1', 'client 1', 'bus 2', 'client 2'], 'then everything runs, in arrival order')
  t.equal(fence.stalls, 1)
  t.notOk(fence.closed('bus'), 'open again')
  fence.run('client', () => ran.push('client 3'))
  t.equal(ran.at(-1), 'client 3', 'and later inputs run at once')
  t.match(lines.join('\n'), /event loop stalled/)
})

t.test('the watchdog notices a stall when its own timer fires late, before any input', async (t) => {
  const { m, fence, verifications } = setup()
  m.freeze(5000)
  m.advance(0) // the late watchdog tick, then the check scheduled after it
  await flush()
  t.equal(fence.stalls, 1, 'noticed by the timer alone')
  t.equal(verifications(), 1)
  t.notOk(fence.closed('client'))
})

t.test('a failed or refused check is retried; inputs keep waiting meanwhile', async (t) => {
  let attempt = 0
  const { m, fence } = setup({
    verify: async () => {
      attempt++
      if (attempt === 1) throw new Error('redis timed out')
      return attempt >= 3
    }
  })
  const ran: string[] = []
  m.freeze(2000)
  fence.run('client', () => ran.push('x'))
  m.advance(0)
  await flush()
  t.equal(attempt, 1)
  m.advance(250)
  await flush()
  t.equal(attempt, 2, 'retried after a failure')
  t.same(ran, [])
  m.advance(250)
  await flush()
  t.equal(attempt, 3, 'and after a check that could not conclude')
  t.same(ran, ['x'])
})

t.test('a stall while the link is down waits for the link, then checks', async (t) => {
  let healthy = false
  const { m, fence, verifications } = setup({ linkHealthy: () => healthy })
  const ran: string[] = []
  m.freeze(3000)
  fence.run('client', () => ran.push('x'))
  m.advance(1000)
  await flush()
  t.equal(verifications(), 0, 'nothing to ask while Redis cannot be reached')
  healthy = true
  m.advance(250)
  await flush()
  t.equal(verifications(), 1)
  t.same(ran, ['x'])
})

t.test('a lost link holds other instances\' messages only, until it is back and ownership is checked', async (t) => {
  let healthy = true
  const { m, fence, verifications } = setup({ linkHealthy: () => healthy })
  const ran: string[] = []
  healthy = false
  fence.linkLost()
  fence.linkLost() // once is enough
  t.equal(fence.linkLosses, 1)
  fence.run('bus', () => ran.push('bus 1'))
  fence.run('client', () => ran.push('client 1'))
  t.same(ran, ['client 1'], 'connected clients are still served')
  t.ok(fence.closed('bus'))
  t.notOk(fence.closed('client'))
  m.advance(2000)
  fence.linkBack() // a flap: not healthy yet
  await flush()
  t.equal(verifications(), 0)
  healthy = true
  fence.linkBack()
  await flush()
  t.equal(verifications(), 1)
  t.same(ran, ['client 1', 'bus 1'])
  t.notOk(fence.closed('bus'))
})

t.test('while a stall holds a client input, later client inputs queue behind it even if only the link is down', async (t) => {
  let release!: (done: boolean) => void
  const { m, fence } = setup({ verify: () => new Promise(resolve => { release = resolve }) })
  const ran: string[] = []
  m.freeze(2000)
  fence.run('client', () => ran.push('a'))
  fence.linkLost()
  fence.run('client', () => ran.push('b'))
  t.same(ran, [])
  m.advance(0)
  await flush()
  release(true)
  await flush()
  t.same(ran, ['a', 'b'], 'in order')
})

t.test('beyond its bound, inputs are refused through overflow instead of queued', async (t) => {
  const { m, fence, overflows } = setup({ queueMax: 2, verify: () => new Promise(() => {}) })
  m.freeze(2000)
  const ran: string[] = []
  for (const scope of ['client', 'bus', 'client', 'bus'] as const) fence.run(scope, () => ran.push(scope))
  t.same(overflows, ['client', 'bus'])
  t.same(ran, [])
})

t.test('an input that throws does not stop the others', async (t) => {
  const { m, fence } = setup()
  const ran: string[] = []
  m.freeze(2000)
  fence.run('bus', () => { throw new Error('boom') })
  fence.run('bus', () => ran.push('after'))
  m.advance(0)
  await flush()
  t.same(ran, ['after'])
  t.match(lines.join('\n'), /an input held behind the fence failed/)
})

t.test('fleet marker: first sight is trusted, a change or a loss is not until a restore adopts the new one', async (t) => {
  let lost = 0
  const marker = new FleetMarker(() => { lost++ })
  t.ok(marker.check(null), 'a fresh Redis before anyone wrote the marker: missing records are real')
  t.ok(marker.check('a'), 'first sight')
  t.ok(marker.check('a'))
  t.notOk(marker.restoring)
  await marker.settled(10) // nothing in progress: at once
  t.notOk(marker.check(null), 'gone: Redis lost its data')
  t.notOk(marker.check('b'), 'another value: still lost')
  t.equal(lost, 1, 'reported once per loss')
  t.ok(marker.restoring)
  const waiting = marker.settled(5000)
  marker.adopt('b')
  await waiting
  t.notOk(marker.restoring)
  t.ok(marker.check('b'), 'believed again after the rewrite')
  t.notOk(marker.check('c'))
  t.equal(lost, 2)
  const started = Date.now()
  await marker.settled(20)
  t.ok(Date.now() - started >= 15, 'a wait for a restore that does not come ends after its bound')
})

t.test('fleet marker: after its own rewrite, a missing record stays in doubt until the others have had time to rewrite theirs', async (t) => {
  let now = 0
  const marker = new FleetMarker(() => {}, 3000, () => now)
  t.ok(marker.check('a'))
  t.notOk(marker.check(null))
  marker.adopt('b')
  t.notOk(marker.check('b'), 'just rewritten here: another instance may not have rewritten its own yet')
  t.equal(marker.doubtLeft(), 3000)
  now = 2999
  t.notOk(marker.check('b'))
  now = 3000
  t.ok(marker.check('b'), 'believed once every live instance has heart-beaten since')
  t.equal(marker.doubtLeft(), 0)
})
