import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateSchemaFiles, serialize } from '../docs/generate'

/** `npm run schemas`: writes the published schema files into schemas/. */
async function main (): Promise<void> {
  const files = await generateSchemaFiles()
  for (const [name, doc] of Object.entries(files)) {
    writeFileSync(join('schemas', name), serialize(doc))
    process.stdout.write(`wrote schemas/${name}\n`)
  }
}

main().catch((err: Error) => {
  process.stderr.write(`schemas: ${err.message}\n`)
  process.exitCode = 1
})
