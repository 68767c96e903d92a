/*
 * Preloaded into a target by bench/gc.ts (`node -r dist/bench/gc-probe.js
 * <server>`): GC and event-loop figures over a window the driver opens and
 * closes with SIGWINCH (close-with-grace shuts the server down on SIGUSR2), without touching the target's code.
 *
 * Per window: scavenges and mark-compacts (count, total and longest pause)
 * from perf_hooks' gc entries, event-loop delay (monitorEventLoopDelay), an
 * allocation profile (the inspector's sampling heap profiler, keeping the
 * samples of objects the GCs collected, so it shows allocation, not only what
 * survived) summed per function and line, and the timer callbacks that ran
 * long (by where the timer was created). Written as JSON to
 * $GC_PROBE_OUT.<n>.json when the window closes.
 */
import { Session } from 'node:inspector'
import { PerformanceObserver, constants, monitorEventLoopDelay } from 'node:perf_hooks'
import { writeFileSync } from 'node:fs'

interface ProfileNode { callFrame: { functionName: string, url: string, lineNumber: number, columnNumber: number }, selfSize: number, children: ProfileNode[] }

const out = process.env['GC_PROBE_OUT'] ?? '/tmp/gc-probe'
const SAMPLING = Number(process.env['GC_PROBE_SAMPLING'] ?? 8192)
const SLOW_TIMER_MS = 2
/** Kept before GC_PROBE_TIMERS wraps the globals: the probe's own ticker is not a target's timer. */
const rawSetInterval = globalThis.setInterval
/** GC_PROBE_LIVE=1: drop the samples scavenges freed: what is left survived the young generation (promoted, whether or not a mark-compact freed it later). */
const live = process.env['GC_PROBE_LIVE'] === '1'

const session = new Session()
session.connect()
const post = (method: string, params: object = {}): Promise<any> => new Promise((resolve, reject) => {
  session.post(method, params, (err, res) => err === null ? resolve(res) : reject(err))
})

const gc = { scavenges: 0, scavengeMs: 0, maxScavengeMs: 0, markCompacts: 0, markCompactMs: 0, maxMarkCompactMs: 0, incremental: 0, weak: 0 }
let open = false
/** GC pauses and slow timer callbacks of the window, by start time: what a slow interval overlapped. */
const events: Array<{ at: number, ms: number, what: string }> = []
new PerformanceObserver((list) => {
  if (!open) return
  for (const e of list.getEntries()) {
    const detail = (e as unknown as { detail?: { kind: number } }).detail
    events.push({ at: e.startTime, ms: e.duration, what: detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR ? 'mark-compact' : detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR ? 'scavenge' : 'gc (other)' })
    const kind = (e as unknown as { detail?: { kind: number } }).detail?.kind
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
      gc.scavenges++
      gc.scavengeMs += e.duration
      gc.maxScavengeMs = Math.max(gc.maxScavengeMs, e.duration)
    } else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      gc.markCompacts++
      gc.markCompactMs += e.duration
      gc.maxMarkCompactMs = Math.max(gc.maxMarkCompactMs, e.duration)
    } else if (kind === constants.NODE_PERFORMANCE_GC_INCREMENTAL) gc.incremental++
    else gc.weak++
  }
}).observe({ entryTypes: ['gc'] })

const eld = monitorEventLoopDelay({ resolution: 5 })

/** Long timer callbacks by the place their timer was created. */
const slowTimers = new Map<string, { count: number, totalMs: number, maxMs: number }>()
function site (): string {
  const lines = (new Error().stack ?? '').split('\n').slice(3)
  // The first two frames outside Node and this file (the first is often a clock's setTimeout wrapper).
  const own = lines.filter(l => !l.includes('node:internal') && !l.includes('gc-probe')).slice(0, 2).map(l => l.trim().replace(/^at /, ''))
  return own.length > 0 ? own.join(' < ') : lines[0]?.trim() ?? '?'
}
function timed<F extends (...args: any[]) => unknown> (fn: F, where: string): F {
  return function (this: unknown, ...args: unknown[]) {
    if (!open) return fn.apply(this, args)
    const t0 = performance.now()
    try {
      return fn.apply(this, args)
    } finally {
      const ms = performance.now() - t0
      if (ms >= SLOW_TIMER_MS) {
        events.push({ at: t0, ms, what: `timer ${where}` })
        const s = slowTimers.get(where) ?? { count: 0, totalMs: 0, maxMs: 0 }
        s.count++
        s.totalMs += ms
        s.maxMs = Math.max(s.maxMs, ms)
        slowTimers.set(where, s)
      }
    }
  } as F
}
if (process.env['GC_PROBE_TIMERS'] === '1') {
  const st = globalThis.setTimeout
  const si = globalThis.setInterval
  ;(globalThis as any).setTimeout = (fn: (...a: unknown[]) => void, ms?: number, ...rest: unknown[]) => st(timed(fn, site()), ms, ...rest)
  ;(globalThis as any).setInterval = (fn: (...a: unknown[]) => void, ms?: number, ...rest: unknown[]) => si(timed(fn, site()), ms, ...rest)
}

function sites (profile: { head: ProfileNode }): Array<{ site: string, bytes: number }> {
  const bySite = new Map<string, number>()
  const name = (f: ProfileNode['callFrame']): string => `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules\/|dist\/)/, '$1')}:${f.lineNumber + 1}`
  // A site is its function and line, with its two callers (`push` alone says little).
  const walk = (node: ProfileNode, callers: string[]): void => {
    const here = name(node.callFrame)
    const key = [here, ...callers.slice(0, 2)].join(' < ')
    if (node.selfSize > 0) bySite.set(key, (bySite.get(key) ?? 0) + node.selfSize)
    for (const c of node.children) walk(c, [here, ...callers])
  }
  walk(profile.head, [])
  return [...bySite].map(([s, bytes]) => ({ site: s, bytes })).sort((a, b) => b.bytes - a.bytes)
}

/**
 * Slow intervals: a 10 ms ticker that ran STALL_MS or more late. Each is
 * explained by what overlapped it: a GC pause or a slow timer callback of
 * 2 ms or more (the longest one), or nothing seen (socket work, another
 * process on the core).
 */
const STALL_MS = 20
const stalls: Array<{ at: number, lateMs: number }> = []
let ticker: NodeJS.Timeout | null = null
function startStalls (): void {
  let last = performance.now()
  const st = rawSetInterval(() => {
    const now = performance.now()
    if (now - last - 10 >= STALL_MS) stalls.push({ at: last, lateMs: now - last - 10 })
    last = now
  }, 10)
  ticker = st
}
function explainStalls (): Record<string, { count: number, lateMs: number }> {
  const out: Record<string, { count: number, lateMs: number }> = {}
  for (const st of stalls) {
    const end = st.at + 10 + st.lateMs
    const overlapping = events.filter(e => e.at < end && e.at + e.ms > st.at && (e.what !== 'scavenge' || e.ms >= 2))
    const main = overlapping.sort((a, b) => b.ms - a.ms)[0]
    const key = main === undefined ? 'nothing seen (sockets, another process)' : main.what
    const o = out[key] ?? (out[key] = { count: 0, lateMs: 0 })
    o.count++
    o.lateMs = Math.round((o.lateMs + st.lateMs) * 10) / 10
  }
  return out
}

let windows = 0
let t0 = 0
async function start (): Promise<void> {
  Object.assign(gc, { scavenges: 0, scavengeMs: 0, maxScavengeMs: 0, markCompacts: 0, markCompactMs: 0, maxMarkCompactMs: 0, incremental: 0, weak: 0 })
  slowTimers.clear()
  events.length = 0
  stalls.length = 0
  startStalls()
  eld.reset()
  eld.enable()
  if (process.env['GC_PROBE_HEAP'] === '1') {
    await post('HeapProfiler.enable')
    await post('HeapProfiler.startSampling', { samplingInterval: SAMPLING, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: !live })
  }
  t0 = performance.now()
  open = true
  process.stdout.write('PROBE start\n')
}
async function stop (): Promise<void> {
  open = false
  if (ticker !== null) clearInterval(ticker)
  const elapsedMs = performance.now() - t0
  eld.disable()
  let allocation: Array<{ site: string, bytes: number }> = []
  let sampledBytes = 0
  if (process.env['GC_PROBE_HEAP'] === '1') {
    const { profile } = await post('HeapProfiler.stopSampling')
    allocation = sites(profile)
    sampledBytes = allocation.reduce((s, x) => s + x.bytes, 0)
  }
  const report = {
    elapsedMs,
    gc,
    eventLoopDelayMs: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 },
    heap: process.memoryUsage(),
    sampledBytes,
    allocation: allocation.slice(0, 40),
    stalls: { atLeastMs: STALL_MS, count: stalls.length, by: explainStalls() },
    slowTimers: [...slowTimers].map(([where, s]) => ({ where, ...s })).sort((a, b) => b.totalMs - a.totalMs).slice(0, 20)
  }
  writeFileSync(`${out}.${windows++}.json`, JSON.stringify(report, null, 1))
  process.stdout.write('PROBE stop\n')
}
process.on('SIGWINCH', () => { (open ? stop() : start()).catch((err: unknown) => process.stderr.write(`gc-probe: ${String(err)}\n`)) })
