import t from 'tap'
import { readFileSync } from 'node:fs'
import { ConfigSchema } from '../schemas/config'

// README, .env.example and the config schema must list the same variables.
const schemaKeys = Object.keys(ConfigSchema.properties).sort()

t.test('.env.example documents every config variable and no others', async (t) => {
  const text = readFileSync('.env.example', 'utf8')
  const keys = [...text.matchAll(/^#?\s?([A-Z][A-Z0-9_]+)=/gm)].map(m => m[1]).sort()
  t.same([...new Set(keys)], schemaKeys)
})

t.test('the README configuration table lists every config variable and no others', async (t) => {
  const text = readFileSync('README.md', 'utf8')
  const section = text.split('## Configuration')[1]?.split('\n## ')[0] ?? ''
  const keys = [...section.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map(m => m[1]).sort()
  t.same(keys, schemaKeys)
})

t.test('documented defaults agree with the schema', async (t) => {
  const text = readFileSync('.env.example', 'utf8')
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const line = text.match(new RegExp(`^${key}=(.*)$`, 'm'))
    const fallback = (schema as { default?: unknown }).default
    if (line !== null && fallback !== undefined) t.equal(line[1], String(fallback), `${key} default`)
  }
})
