// npm run coverage:unit: coverage of the signaling core and the mesh
// (src/signaling, src/cluster) from the unit suite alone, per file. The unit
// suite is the in-process tests: they may start a real redis-server, never a
// server process of ours (dist/server.js) or any other node process. Fails
// when any one file is under 90 % of lines or 85 % of branches, with a table
// of those files. c8 runs with --all, so a file no unit test loads counts as
// 0 %; a file with no executable code (interfaces only) counts as 100 %.
//
// c8's own --check-coverage cannot apply per-file limits to two folders only
// after source-map remapping, so this reads the json-summary it writes.
//
// `--from <dir>` (what `npm test` passes: the whole suite's c8 temp directory)
// runs no test: it reports from the V8 coverage files the unit test files'
// processes already wrote in that run. tap runs each test file in a process
// of its own, so a file of that directory belongs to the unit suite exactly
// when one of its scripts is a unit test file. This saves running the unit
// suite twice (minutes of `npm test`); without `--from` it runs the unit suite.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/**
 * The unit suite, defined here only: these files, and every test/unit-*.test.ts.
 * A file joins the list when it starts no process of ours.
 */
const UNIT_TESTS = [
  'test/core.test.ts',
  'test/core-lifecycle.test.ts',
  'test/core-races.test.ts',
  'test/core-fence.test.ts',
  'test/core-mesh.test.ts',
  'test/core-routes.test.ts',
  'test/fence.test.ts',
  'test/session.test.ts',
  'test/session-log.test.ts',
  'test/mesh-contract.test.ts',
  'test/liveness.test.ts',
  'test/instance-protocol.test.ts'
]
const UNIT_PATTERN = /^unit-.+\.test\.ts$/
const FOLDERS = ['src/signaling', 'src/cluster']
const MIN_LINES = 90
const MIN_BRANCHES = 85
const OUT = 'coverage/unit'

const bin = (name) => join('node_modules', '.bin', name)
const named = [...UNIT_TESTS, ...readdirSync('test').filter(f => UNIT_PATTERN.test(f)).sort().map(f => `test/${f}`)]
const tests = named.filter((file) => {
  if (existsSync(file)) return true
  console.log(`coverage:unit: ${file} does not exist (yet): skipped`)
  return false
})

const fromFlag = process.argv.indexOf('--from')
const from = fromFlag === -1 ? undefined : process.argv[fromFlag + 1]
const TMP = join(OUT, 'tmp')
rmSync(OUT, { recursive: true, force: true })
const report = [
  '--temp-directory', TMP,
  '--report-dir', OUT,
  '--reporter', 'json-summary',
  '--reporter', 'text',
  '--all',
  '--src', 'src',
  ...FOLDERS.flatMap(folder => ['--include', `${folder}/**`])
]

if (from === undefined) {
  const run = spawnSync(bin('c8'), [...report, bin('tap'), '--disable-coverage', ...tests], { stdio: 'inherit' })
  if (run.status !== 0) {
    console.error(`coverage:unit: the unit suite failed (exit ${run.status ?? run.signal})`)
    process.exit(1)
  }
} else {
  // The script URL V8 records for each unit test file, as it appears in the JSON.
  const markers = tests.map(file => Buffer.from(`"url":"${pathToFileURL(resolve(file)).href}"`))
  const found = new Set()
  mkdirSync(TMP, { recursive: true })
  for (const name of readdirSync(from).filter(f => f.endsWith('.json'))) {
    const text = readFileSync(join(from, name))
    const hits = markers.filter(marker => text.includes(marker))
    if (hits.length === 0) continue
    for (const hit of hits) found.add(hit)
    try { linkSync(join(from, name), join(TMP, name)) } catch { copyFileSync(join(from, name), join(TMP, name)) }
  }
  // A unit test file with no coverage file did not run in that suite: its
  // share of the coverage would be silently missing.
  const missing = tests.filter((_, i) => !found.has(markers[i]))
  if (missing.length > 0) {
    console.error(`coverage:unit: no coverage in ${from} from ${missing.join(', ')}; run the tap suite under c8 first, or run without --from`)
    process.exit(1)
  }
  const run = spawnSync(bin('c8'), ['report', ...report], { stdio: 'inherit' })
  if (run.status !== 0) {
    console.error(`coverage:unit: c8 report failed (exit ${run.status ?? run.signal})`)
    process.exit(1)
  }
}

const summary = JSON.parse(readFileSync(join(OUT, 'coverage-summary.json'), 'utf8'))
const byFile = new Map(Object.entries(summary).map(([file, stats]) => [relative('.', file), stats]))
const failing = []
let checked = 0
for (const folder of FOLDERS) {
  for (const name of readdirSync(folder).filter(f => f.endsWith('.ts')).sort()) {
    const file = `${folder}/${name}`
    const stats = byFile.get(file)
    // --all lists every file; one missing from the report was never measured.
    const lines = stats?.lines.pct ?? 0
    const branches = stats?.branches.pct ?? 0
    checked++
    if (lines < MIN_LINES || branches < MIN_BRANCHES) failing.push({ file, lines, branches })
  }
}

if (failing.length === 0) {
  console.log(`coverage:unit: all ${checked} files of ${FOLDERS.join(' and ')} reach ${MIN_LINES} % of lines and ${MIN_BRANCHES} % of branches from the unit suite`)
} else {
  const width = Math.max(...failing.map(f => f.file.length), 4)
  const pct = (value, min) => `${value.toFixed(2).padStart(6)}${value < min ? ' <' : '  '}`
  console.error(`coverage:unit: ${failing.length} of ${checked} files under ${MIN_LINES} % of lines or ${MIN_BRANCHES} % of branches from the unit suite:`)
  console.error(`  ${'file'.padEnd(width)}  % lines  % branches`)
  for (const { file, lines, branches } of failing) console.error(`  ${file.padEnd(width)}  ${pct(lines, MIN_LINES)}  ${pct(branches, MIN_BRANCHES)}`)
  process.exitCode = 1
}
