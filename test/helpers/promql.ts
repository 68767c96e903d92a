/*
 * Reading the PromQL of deploy/grafana and deploy/prometheus: which queries a
 * dashboard runs, which metrics an expression reads, and the expression as
 * Prometheus would get it from Grafana (template variables filled in).
 */

export interface Query { where: string, expr: string }

interface Panel { title?: string, type?: string, targets?: Array<{ refId?: string, expr?: string }>, panels?: Panel[] }
interface Variable { name: string, type: string, query?: string | { query?: string } }
export interface Dashboard { panels: Panel[], templating?: { list?: Variable[] } }

/** Every query of a dashboard: its panels' targets (panels inside rows too) and its query variables' selectors. */
export function dashboardQueries (dashboard: Dashboard): Query[] {
  const out: Query[] = []
  const walk = (panels: Panel[]): void => {
    for (const panel of panels) {
      for (const target of panel.targets ?? []) {
        if (target.expr !== undefined) out.push({ where: `panel "${panel.title ?? '?'}" ${target.refId ?? '?'}`, expr: target.expr })
      }
      walk(panel.panels ?? [])
    }
  }
  walk(dashboard.panels)
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type !== 'query') continue
    const text = typeof variable.query === 'string' ? variable.query : variable.query?.query ?? ''
    // label_values(<selector>, <label>): the selector is what Prometheus is asked for.
    const selector = /^label_values\((.+),\s*\w+\s*\)$/.exec(text.trim())?.[1]
    out.push({ where: `variable $${variable.name}`, expr: selector ?? text })
  }
  return out
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan'])

/**
 * The metric names an expression reads: identifiers that are not functions
 * or aggregations (followed by `(`), keywords, label names (inside `{…}` or a
 * grouping clause), strings or durations.
 */
export function metricNames (expr: string): string[] {
  const bare = expr
    .replace(/\$__\w+/g, '1m')
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names = new Set<string>()
  for (const m of bare.matchAll(/(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()/g)) {
    if (!KEYWORDS.has(m[0].toLowerCase())) names.add(m[0])
  }
  return [...names]
}

/** The expression Grafana would send for these variable values ($__rate_interval and friends as `interval`). */
export function fillVariables (expr: string, values: Record<string, string>, interval = '1m'): string {
  return expr
    .replace(/\$__(?:rate_)?interval\b/g, interval)
    .replace(/\$\{?(\w+)\}?/g, (whole, name: string) => values[name] ?? whole)
}

/** The sample names of a Prometheus text exposition (`_bucket`, `_sum`, `_count` of histograms included). */
export function exposedNames (text: string): Set<string> {
  const names = new Set<string>()
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_:][\w:]*)[{ ]/.exec(line)
    if (m !== null) names.add(m[1] as string)
  }
  return names
}
