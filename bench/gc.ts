/*
 * Allocation and GC per relayed message, for one target (the floor or our
 * server in memory mode) under a fixed relay load: what timings on a busy
 * machine cannot say, since bytes and collections hardly depend on load.
 *
 *   npm run build && npx esbuild bench/gc.ts bench/gc-probe.ts bench/floor.ts --bundle \
 *     --platform=node --target=node20 --packages=external --outdir=dist/bench --log-level=warning
 *   node dist/bench/gc.js --mode=floor|memory [--rates=5000,10000,15000] [--stepMs=8000]
 *     [--pairs=500] [--heap | --live] [--timers] [--node-args='<v8 flags>']
 *     [--server=<another build's dist/server.js>] [--redis-url=redis://127.0.0.1:<port>]
 *
 * The target runs with --trace-gc-nvp (V8's own count of bytes allocated and
 * promoted at every collection) and bench/gc-probe.ts preloaded; 500 joined
 * pairs warm up for 2 s at the first rate, then the window covers the whole
 * sweep. --heap adds a sampling allocation profile (top sites per message);
 * --live the same profile without what scavenges freed: the sites of what was
 * promoted; --timers the timer callbacks that ran 2 ms or longer.
 */
import { spawn } from 'node:child_process'
import { appendFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { privydrop } from './privydrop'
import type { Client } from './protocol'
import { freePort, sleep } from './util'

const arg = (name: string): string | undefined => process.argv.find(a => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const flag = (name: string): boolean => process.argv.includes(`--${name}`)
const MODE = arg('mode') ?? 'memory'
const RATES = (arg('rates') ?? '5000,10000,15000').split(',').map(Number)
const STEP_MS = Number(arg('stepMs') ?? 8000)
const PAIRS = Number(arg('pairs') ?? 500)
const ROOT = join(__dirname, '..', '..')
const OUT = `/tmp/gc-probe-${process.pid}`

interface Gc { kind: string, pause: number, allocated: number, promoted: number, survived: number }

async function main (): Promise<void> {
  const port = await freePort()
  // --server=<path>: another build of the server (an earlier commit's dist/server.js, to compare).
  const script = MODE === 'floor' ? join(ROOT, 'dist/bench/floor.js') : arg('server') ?? join(ROOT, 'dist/server.js')
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '',
    PORT: String(port),
    HOST: '127.0.0.1',
    GC_PROBE_OUT: OUT,
    ...((flag('heap') || flag('live')) && { GC_PROBE_HEAP: '1' }),
    ...(flag('timers') && { GC_PROBE_TIMERS: '1' }),
    ...(flag('live') && { GC_PROBE_HEAP: '1', GC_PROBE_LIVE: '1' }),
    ...(MODE !== 'floor' && {
      LOG_LEVEL: 'warn',
      DISABLE_JOIN_RATE_LIMIT: 'true',
      API_RATE_LIMIT_MAX: '100000000',
      MAX_CONNECTIONS_PER_IP: '100000',
      WS_RATE_PER_S: '100000',
      WS_RATE_BURST: '100000',
      STUN_URLS: '',
      // --redis-url=redis://127.0.0.1:<port>: the same single instance on the Redis store (its fence and mesh on).
      ...(arg('redis-url') !== undefined && { REDIS_URL: arg('redis-url') as string, KEY_PREFIX: `gc${process.pid}:` })
    })
  }
  // --node-args='--trace-pretenuring …': more V8 flags for the target; its other output lines go to OUT.log.
  const extra = (arg('node-args') ?? '').split(' ').filter(Boolean)
  const child = spawn(process.execPath, [...extra, '--trace-gc-nvp', '-r', join(ROOT, 'dist/bench/gc-probe.js'), script], { env, stdio: ['ignore', 'pipe', 'inherit'] })
  const gcs: Gc[] = []
  const phases = new Map<string, number>()
  let inWindow = false
  let stopped: (() => void) | null = null
  let buffer = ''
  child.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString()
    let nl
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl)
      buffer = buffer.slice(nl + 1)
      if (line === 'PROBE start') inWindow = true
      else if (line === 'PROBE stop') {
        inWindow = false
        stopped?.()
      } else if (inWindow && line.includes(' gc=')) {
        const field = (name: string): number => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0)
        const kind = /\bgc=(\w+)/.exec(line)?.[1] ?? '?'
        gcs.push({ kind, pause: field('pause'), allocated: field('allocated'), promoted: field('promoted'), survived: field('new_space_survived') })
        // Where a scavenge's pause goes (V8's phases), summed over the window.
        if (kind === 's') for (const m of line.matchAll(/\b(scavenge[\w.]*)=([\d.]+)/g)) phases.set(m[1] as string, (phases.get(m[1] as string) ?? 0) + Number(m[2]))
      } else if (!line.includes(' gc=')) appendFileSync(`${OUT}.log`, line + '\n')
    }
  })
  const http = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`${http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"roomId":"probe"}' })
      if (res.status < 500) break
    } catch {}
    if (i > 300) throw new Error('target did not come up')
    await sleep(50)
  }
  const endpoint = { http, ws: `ws://127.0.0.1:${port}/ws` }
  const pairs: Array<{ a: Client, b: Client }> = []
  for (let i = 0; i < PAIRS; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, PAIRS - i) }, () => privydrop.pair(endpoint, endpoint)))
    for (const [a, b] of batch) pairs.push({ a, b })
  }
  let delivered = 0
  let late = 0
  const latencies: number[] = []
  for (const { b } of pairs) {
    b.onSignal = (_kind, body) => {
      delivered++
      const ms = performance.now() - Number(String(body.candidate).split(' ')[1])
      latencies.push(ms)
      if (ms > 50) late++
    }
  }
  let sent = 0
  let cursor = 0
  const send = (): void => {
    const pair = pairs[cursor++ % pairs.length]
    if (pair === undefined) return
    pair.a.signal('candidate', pair.b.id, { candidate: `${sent++} ${performance.now()}`, sdpMLineIndex: 0 })
  }
  const paced = async (rate: number, ms: number): Promise<void> => {
    const t0 = performance.now()
    const base = sent
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const due = Math.floor((performance.now() - t0) / 1000 * rate) - (sent - base)
        for (let i = 0; i < Math.min(due, rate / 25); i++) send()
        if (performance.now() - t0 >= ms) {
          clearInterval(timer)
          resolve()
        }
      }, 10)
    })
  }
  const behind = (): boolean => delivered < sent
  // Warm-up (JIT, pools), then the measured window over the whole sweep.
  await paced(RATES[0] ?? 5000, 2000)
  while (behind()) await sleep(20)
  await sleep(300)
  delivered = 0
  sent = 0
  latencies.length = 0
  child.kill('SIGWINCH')
  await sleep(200)
  const perStep: Array<{ rate: number, p99: number }> = []
  for (const rate of RATES) {
    const from = latencies.length
    await paced(rate, STEP_MS)
    const step = latencies.slice(from).sort((x, y) => x - y)
    perStep.push({ rate, p99: Math.round((step[Math.floor(step.length * 0.99)] ?? NaN) * 10) / 10 })
  }
  const until = performance.now() + 5000
  while (behind() && performance.now() < until) await sleep(20)
  const closed = new Promise<void>(resolve => { stopped = resolve })
  child.kill('SIGWINCH')
  await closed
  const report = JSON.parse(readFileSync(`${OUT}.0.json`, 'utf8')) as { gc: Record<string, number>, eventLoopDelayMs: Record<string, number>, sampledBytes: number, allocation: Array<{ site: string, bytes: number }>, slowTimers: unknown[], stalls: unknown }
  const sum = (xs: Gc[], k: keyof Omit<Gc, 'kind'>): number => xs.reduce((s, g) => s + g[k], 0)
  const scav = gcs.filter(g => g.kind === 's')
  const major = gcs.filter(g => g.kind === 'mc' || g.kind === 'ms')
  const per = (x: number): number => Math.round(x / Math.max(1, delivered))
  const result = {
    mode: MODE,
    rates: RATES,
    stepMs: STEP_MS,
    sent,
    delivered,
    lost: sent - delivered,
    late,
    p99Ms: perStep,
    bytesAllocatedPerMsg: per(sum(gcs, 'allocated')),
    bytesPromotedPerMsg: Math.round(sum(gcs, 'promoted') / Math.max(1, delivered) * 10) / 10,
    bytesSurvivingScavengePerMsg: Math.round(sum(scav, 'survived') / Math.max(1, delivered) * 10) / 10,
    scavenges: scav.length,
    markCompacts: major.length,
    markCompactPausesMs: major.map(g => g.pause),
    scavengePhasesMsPerScavenge: Object.fromEntries([...phases].filter(([k]) => !k.includes('throughput')).map(([k, ms]) => [k, Math.round(ms / Math.max(1, gcs.filter(g => g.kind === 's').length) * 100) / 100])),
    gcKinds: Object.fromEntries([...new Set(gcs.map(g => g.kind))].map(k => [k, gcs.filter(g => g.kind === k).length])),
    probe: { gc: report.gc, eventLoopDelayMs: report.eventLoopDelayMs, stalls: report.stalls, slowTimers: report.slowTimers },
    ...((flag('heap') || flag('live')) && {
      sampledBytesPerMsg: per(report.sampledBytes),
      topSites: report.allocation.slice(0, 25).map(s => `${per(s.bytes).toString().padStart(6)} B/msg  ${s.site}`)
    })
  }
  process.stdout.write(JSON.stringify(result, null, 1) + '\n')
  child.kill('SIGTERM')
  await Promise.race([new Promise(resolve => child.once('exit', resolve)), sleep(3000)])
  if (child.exitCode === null) child.kill('SIGKILL')
  process.exit(0)
}

main().catch((err: Error) => {
  process.stderr.write(`gc: ${err.stack ?? err.message}\n`)
  process.exit(1)
})
