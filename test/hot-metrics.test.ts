import { test } from 'tap'
import { Counter, Histogram, Registry } from 'prom-client'
import { FastHistogram, batchedCounter } from '../src/services/hot-metrics'

/*
 * The relay path's metrics skip prom-client's per-call work; a scrape must
 * still read exactly what prom-client's own counter and histogram would give.
 */

const BUCKETS = [0.0001, 0.001, 0.01]
const VALUES = [0.00005, 0.0001, 0.0007, 0.004, 0.2, 0.00002]

/** What a JSON reader of the registry uses (prom-client adds empty exemplars of its own). */
function essence (metrics: Awaited<ReturnType<Registry['getMetricsAsJSON']>>): unknown {
  return metrics.map(m => ({ name: m.name, help: m.help, type: m.type, values: m.values.map(v => ({ labels: v.labels, value: v.value })) }))
}

test('FastHistogram exposes what a prom-client Histogram does, in text and JSON', async (t) => {
  const reference = new Registry()
  const fast = new Registry()
  const config = { name: 'relay_seconds', help: 'Relay time', labelNames: ['path'] as const, buckets: BUCKETS }
  const slow = new Histogram({ ...config, registers: [reference] })
  const quick = new FastHistogram({ ...config, registers: [fast] })
  t.equal(await fast.metrics(), await reference.metrics(), 'before any observation')
  const local = quick.recorder({ path: 'local' })
  const remote = quick.recorder({ path: 'remote' })
  VALUES.forEach((v, i) => {
    slow.labels(i % 2 === 0 ? 'local' : 'remote').observe(v)
    ;(i % 2 === 0 ? local : remote)(v)
  })
  const text = await fast.metrics()
  t.equal(text, await reference.metrics())
  t.match(text, /relay_seconds_bucket\{le="0\.001",path="local"\} 2/)
  t.match(text, /relay_seconds_count\{path="remote"\} 3/)
  t.same(essence(await fast.getMetricsAsJSON()), essence(await reference.getMetricsAsJSON()))

  quick.reset()
  slow.reset()
  t.equal(await fast.metrics(), await reference.metrics(), 'reset empties it, as prom-client\'s does')
  t.notMatch(await fast.metrics(), /relay_seconds_count/)
  local(0.002)
  slow.labels('local').observe(0.002)
  t.equal(await fast.metrics(), await reference.metrics(), 'only the label set observed since shows')
  t.throws(() => quick.observe(1), /recorder/, 'prom-client observe would be lost, so it is refused')
  t.throws(() => quick.startTimer(), /recorder/, 'and so is its timer')
  local(Number.NaN)
  local(Number.POSITIVE_INFINITY)
  t.equal(await fast.metrics(), await reference.metrics(), 'non-finite values are dropped, as prom-client refuses them')
})

test('batchedCounter totals reach the prom-client counter at every read', async (t) => {
  const reference = new Registry()
  const fast = new Registry()
  const slow = new Counter({ name: 'messages_total', help: 'Messages', labelNames: ['type'] as const, registers: [reference] })
  const count = batchedCounter({ name: 'messages_total', help: 'Messages', labelNames: ['type'] as const, registers: [fast] })
  for (const type of ['offer', 'answer', 'offer', 'ice-candidate', 'offer']) {
    slow.inc({ type })
    count(type)
  }
  t.equal(await fast.metrics(), await reference.metrics())
  // Counted between two reads: added once, never twice.
  count('answer')
  slow.inc({ type: 'answer' })
  t.equal(await fast.metrics(), await reference.metrics())
  t.equal(await fast.metrics(), await reference.metrics())
  t.match(await fast.metrics(), /messages_total\{type="answer"\} 2/)
  // Counted, not yet read, then reset: gone with the reset.
  count('offer')
  fast.resetMetrics()
  reference.resetMetrics()
  t.equal(await fast.metrics(), await reference.metrics(), 'a reset drops the counts not yet handed over')
})
