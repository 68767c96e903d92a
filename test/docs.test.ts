import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { sep } from 'node:path'
import { ConfigSchema } from '../schemas/config'
import { FALSE_WORDS, loadConfig, TRUE_WORDS } from '../src/config'

// README, .env.example and the config schema must list the same variables.
const schemaKeys = Object.keys(ConfigSchema.properties).sort()

/** The README's Configuration section. */
function readmeSection (title: string): string {
  const text = readFileSync('README.md', 'utf8')
  return text.split(`\n## ${title}\n`)[1]?.split('\n## ')[0] ?? ''
}

/** Variable → default cell of the README's configuration table. */
function readmeDefaults (): Map<string, string> {
  const rows = readmeSection('Configuration').matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| ([^|]*?) \|/gm)
  return new Map([...rows].map(m => [m[1] ?? '', m[2] ?? '']))
}

t.test('.env.example documents every config variable and no others', async (t) => {
  const text = readFileSync('.env.example', 'utf8')
  const keys = [...text.matchAll(/^#?\s?([A-Z][A-Z0-9_]+)=/gm)].map(m => m[1]).sort()
  t.same([...new Set(keys)], schemaKeys)
})

t.test('the README configuration table lists every config variable and no others', async (t) => {
  t.same([...readmeDefaults().keys()].sort(), schemaKeys)
})

t.test('the README configuration table gives the schema\'s defaults, and the production ones where they differ', async (t) => {
  const rows = readmeDefaults()
  const dev = loadConfig({}) as Record<string, unknown>
  const production = loadConfig({ NODE_ENV: 'production' }) as Record<string, unknown>
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const fallback = (schema as { default?: unknown }).default
    let expected = fallback === undefined ? 'unset' : fallback === '' ? 'empty' : `\`${String(fallback)}\``
    t.equal(dev[key], fallback, `${key}: the schema's default is the default`)
    if (key !== 'NODE_ENV' && production[key] !== dev[key]) expected += ` (\`${String(production[key])}\` in production)`
    t.equal(rows.get(key), expected, `${key} default`)
  }
})

/** The words a document says booleans accept: "Booleans accept a/b, c/d and e/f, in any case; an empty value is false." */
function booleanWords (text: string): { true: string[], false: string[] } {
  const prose = text.replace(/^[ \t]*(?:#|\*) ?/gm, '').replace(/\s+/g, ' ')
  const sentence = /Booleans accept (.+?), in any case; an empty value is `?false`?\./.exec(prose)?.[1] ?? ''
  const pairs = [...sentence.matchAll(/`?(\w+)`?\/`?(\w+)`?/g)]
  return { true: pairs.map(m => m[1] ?? '').sort(), false: [...pairs.map(m => m[2] ?? ''), ''].sort() }
}

t.test('README, .env.example and the schema list exactly the boolean words the config accepts', async (t) => {
  const accepted = { true: [...TRUE_WORDS].sort(), false: [...FALSE_WORDS].sort() }
  for (const file of ['README.md', '.env.example', 'schemas/config.ts']) {
    t.same(booleanWords(readFileSync(file, 'utf8')), accepted, file)
  }
})

t.test('.env.example defaults agree with the schema', async (t) => {
  const text = readFileSync('.env.example', 'utf8')
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const line = text.match(new RegExp(`^${key}=(.*)$`, 'm'))
    const fallback = (schema as { default?: unknown }).default
    if (line !== null && fallback !== undefined) t.equal(line[1], String(fallback), `${key} default`)
  }
})

t.test('the README layout names every source file under src/, and only files that exist', async (t) => {
  const files = readdirSync('src', { recursive: true, encoding: 'utf8' })
    .filter(file => file.endsWith('.ts'))
    .map(file => `src/${file.split(sep).join('/')}`)
    .sort()
  const listed = [...readmeSection('Layout').matchAll(/^(src\/\S+\.ts)\b/gm)].map(m => m[1]).sort()
  t.same(listed, files)
})
