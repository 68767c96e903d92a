import t from 'tap'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Parser } from '@asyncapi/parser'

/*
 * The published documents pass the linters a team would run on them.
 * OpenAPI: `redocly lint` with its recommended ruleset; the only exceptions
 * are in .redocly.lint-ignore.yaml, each explained there.
 * AsyncAPI: what `asyncapi validate` runs (the CLI is a wrapper of
 * @asyncapi/parser's validate() with its default ruleset; the CLI itself
 * pulls in ~1.4 GB, next.js among it, so it is not a dependency here).
 */

const REDOCLY = join('node_modules', '@redocly', 'cli', 'bin', 'cli.js')

function redoclyLint (file: string, cwd = process.cwd()): { status: number | null, problems: Array<{ ruleId: string, severity: string, message: string }> } {
  const run = spawnSync(process.execPath, [join(process.cwd(), REDOCLY), 'lint', file, '--format=json'], {
    cwd,
    encoding: 'utf8',
    // No telemetry or update checks from a test.
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_UPDATE_NOTIFIER: '1' }
  })
  const start = run.stdout.indexOf('{')
  const report = JSON.parse(start >= 0 ? run.stdout.slice(start) : '{"problems":[]}') as { problems: Array<{ ruleId: string, severity: string, message: string, ignored?: boolean }> }
  return { status: run.status, problems: report.problems.filter(p => p.ignored !== true) }
}

t.test('redocly lint (recommended ruleset): no errors, no warnings', async (t) => {
  const { status, problems } = redoclyLint('schemas/openapi.json')
  t.same(problems.map(p => `${p.severity} ${p.ruleId}: ${p.message}`), [], 'no problems')
  t.equal(status, 0, 'redocly exits 0')
})

t.test('redocly lint has teeth: the same document without its license or security fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-lint-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const doc = JSON.parse(readFileSync('schemas/openapi.json', 'utf8')) as { info: Record<string, unknown>, security?: unknown }
  delete doc.info['license']
  delete doc.security
  writeFileSync(join(dir, 'openapi.json'), JSON.stringify(doc))
  copyFileSync('.redocly.lint-ignore.yaml', join(dir, '.redocly.lint-ignore.yaml'))
  const { status, problems } = redoclyLint('openapi.json', dir)
  t.not(status, 0)
  t.ok(problems.some(p => p.ruleId === 'security-defined'), 'security-defined reported')
  t.ok(problems.some(p => p.ruleId === 'info-license'), 'info-license reported')
})

t.test('asyncapi validate: no errors, no warnings', async (t) => {
  const diagnostics = await new Parser().validate(readFileSync('schemas/asyncapi.json', 'utf8'))
  // Severity 0 error, 1 warning, 2 information, 3 hint.
  const serious = diagnostics.filter(d => d.severity <= 1)
  t.same(serious.map(d => `${d.code} ${d.path.join('.')}: ${d.message}`), [], 'no errors or warnings')
  // The one piece of information: AsyncAPI 3.1 exists, but @asyncapi/modelina 5 reads 3.0 at most (src/docs/asyncapi.ts).
  t.same(diagnostics.filter(d => d.severity > 1).map(d => d.code), ['asyncapi-latest-version'], 'only the note that 3.1 exists')
})
