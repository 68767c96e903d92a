import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

/*
 * The module graph of src/: no import cycles (type-only imports included: a
 * type cycle is a design cycle too), and the infrastructure (src/redis,
 * src/store, src/cluster) never imports the signaling core at runtime (it
 * may name the core's types, which vanish from the build).
 */

const root = resolve(__dirname, '..')

function sources (dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : []
  })
}

interface Edge { to: string, typeOnly: boolean }

/** The relative imports of a file: where to, and whether only types are taken. */
function importsOf (file: string): Edge[] {
  const text = readFileSync(file, 'utf8')
  const edges: Edge[] = []
  const re = /^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s+'(\.[^']+)'/gm
  for (const m of text.matchAll(re)) {
    const spec = m[4] as string
    let target = resolve(dirname(file), spec)
    if (!target.endsWith('.ts') && !target.endsWith('.json')) target = statSafe(`${target}.ts`) ? `${target}.ts` : join(target, 'index.ts')
    if (!target.startsWith(join(root, 'src'))) continue
    // `import { type A, type B }` takes only types too.
    const names = m[3] ?? ''
    const braces = names.match(/\{([^}]*)\}/)
    const allTypes = braces !== null && !names.replace(/\{[^}]*\}/, '').trim().replace(/,$/, '') && (braces[1] ?? '').split(',').map(s => s.trim()).filter(Boolean).every(s => s.startsWith('type '))
    edges.push({ to: target, typeOnly: m[2] !== undefined || allTypes })
  }
  return edges
}

function statSafe (path: string): boolean {
  try { return statSync(path).isFile() } catch { return false }
}

const files = sources(join(root, 'src'))
const graph = new Map(files.map(f => [f, importsOf(f)]))
const rel = (f: string): string => relative(root, f)

t.test('no import cycles in src/ (type-only imports included)', async (t) => {
  const cycles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (file: string): void => {
    state.set(file, 'open')
    stack.push(file)
    for (const { to } of graph.get(file) ?? []) {
      if (state.get(to) === 'open') cycles.push([...stack.slice(stack.indexOf(to)), to].map(rel).join(' → '))
      else if (!state.has(to)) visit(to)
    }
    stack.pop()
    state.set(file, 'done')
  }
  for (const file of files) if (!state.has(file)) visit(file)
  t.same(cycles, [], 'cycles found')
  t.ok(graph.size > 50, `read the imports of ${graph.size} files`)
})

t.test('the infrastructure never imports the signaling core at runtime', async (t) => {
  const leaks: string[] = []
  for (const [file, edges] of graph) {
    if (!/\/src\/(redis|store|cluster)\//.test(file)) continue
    for (const { to, typeOnly } of edges) if (!typeOnly && to.includes('/src/signaling/')) leaks.push(`${rel(file)} → ${rel(to)}`)
  }
  t.same(leaks, [])
})

t.test('the reader sees what it should (a guard against a regex that reads nothing)', async (t) => {
  const hub = graph.get(join(root, 'src/signaling/hub.ts')) ?? []
  t.ok(hub.some(e => e.to.endsWith('/src/signaling/session.ts') === false && e.to.endsWith('/src/signaling/lifecycle.ts') && !e.typeOnly), 'hub imports lifecycle at runtime')
  t.ok(hub.some(e => e.to.endsWith('/src/signaling/mesh.ts') && e.typeOnly), 'and only the Mesh type')
})
