import { Counter, Histogram, type CounterConfiguration, type HistogramConfiguration, type LabelValues, type MetricType } from 'prom-client'

/*
 * Metrics touched for every relayed message. prom-client validates and hashes
 * the labels on every inc() and observe(), which profiling put at about 5 % of
 * the server's CPU per relay. Here the hot path is a field increment; the
 * totals reach prom-client (or its output) when the registry is read, so
 * /metrics shows exactly what it showed before.
 */

/** A counter with one label: `count(label)` adds one; prom-client's own counter gets the sum when read. */
export function batchedCounter<T extends string> (config: CounterConfiguration<T> & { labelNames: readonly [T] }): (label: string) => void {
  const [labelName] = config.labelNames
  const cells = new Map<string, { n: number }>()
  // A collect hook runs before every read of the counter (exposition, JSON, tests).
  const counter: Counter<T> = new Counter({
    ...config,
    collect () {
      for (const [label, cell] of cells) {
        if (cell.n === 0) continue
        counter.inc({ [labelName]: label } as LabelValues<T>, cell.n)
        cell.n = 0
      }
    }
  })
  // Counts not yet handed over go with a reset too.
  const reset = counter.reset.bind(counter)
  counter.reset = () => {
    for (const cell of cells.values()) cell.n = 0
    reset()
  }
  return (label) => {
    const cell = cells.get(label)
    if (cell !== undefined) cell.n++
    else cells.set(label, { n: 1 })
  }
}

type HistogramValues<T extends string> = Awaited<ReturnType<Histogram<T>['get']>>
/** prom-client's typings declare MetricType a numeric enum; its registry writes `# TYPE` from this string. */
const HISTOGRAM = 'histogram' as unknown as MetricType

/**
 * A histogram whose observe is a bucket search and three additions. It is a
 * prom-client Histogram (registered, named and typed as one) whose values come
 * from its own counts rather than prom-client's.
 */
export class FastHistogram<T extends string> extends Histogram<T> {
  private readonly bounds: number[]
  private readonly meta: { name: string, help: string }
  private readonly series: Array<{ labels: LabelValues<T>, counts: Float64Array, sum: number, count: number }> = []

  constructor (config: HistogramConfiguration<T> & { buckets: number[] }) {
    super(config)
    this.bounds = [...config.buckets].sort((a, b) => a - b)
    this.meta = { name: config.name, help: config.help }
    // prom-client's own observations would never be exported (its constructor
    // sets observe on the instance, so these are replaced here rather than overridden).
    const refuse = (): never => { throw new Error(`${config.name}: observe through recorder()`) }
    this.observe = refuse
    this.startTimer = refuse
    this.labels = refuse
    this.zero = refuse
    this.remove = refuse
  }

  /** An observer for one label set, resolved once by the caller. */
  recorder (labels: LabelValues<T>): (value: number) => void {
    const s = { labels, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 }
    this.series.push(s)
    const bounds = this.bounds
    return (value) => {
      // As prom-client refuses them: one NaN would make the sum NaN until a reset.
      if (!Number.isFinite(value)) return
      s.sum += value
      s.count++
      for (let i = 0; i < bounds.length; i++) {
        if (value <= (bounds[i] as number)) {
          (s.counts[i] as number)++
          return
        }
      }
    }
  }

  override async get (): Promise<HistogramValues<T>> {
    const values: HistogramValues<T>['values'] = []
    const { name, help } = this.meta
    const bucket = `${name}_bucket`
    for (const s of this.series) {
      // Like prom-client: a label set shows up once it has been observed (and again after a reset).
      if (s.count === 0) continue
      let cumulative = 0
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i] ?? 0
        values.push({ metricName: bucket, labels: withBound(s.labels, le), value: cumulative })
      })
      values.push({ metricName: bucket, labels: withBound(s.labels, '+Inf'), value: s.count })
      values.push({ metricName: `${name}_sum`, labels: { ...s.labels }, value: s.sum })
      values.push({ metricName: `${name}_count`, labels: { ...s.labels }, value: s.count })
    }
    // `collect` is part of prom-client's MetricObject type: no hook is configured here.
    return { name, help, type: HISTOGRAM, aggregator: 'sum', collect: () => {}, values }
  }

  /** What the registry reads for the text exposition (prom-client prefers it to get()). */
  async getForPromString (): Promise<HistogramValues<T>> {
    return await this.get()
  }

  override reset (): void {
    // prom-client's constructor calls reset() before this class's fields exist.
    const series = this.series as typeof this.series | undefined
    for (const s of series ?? []) {
      s.counts.fill(0)
      s.sum = 0
      s.count = 0
    }
  }
}

/** A bucket's labels: the series' own plus `le`, which prom-client adds to histograms beyond the declared names. */
function withBound<T extends string> (labels: LabelValues<T>, le: number | string): LabelValues<T> {
  return { le, ...labels } as LabelValues<T>
}
