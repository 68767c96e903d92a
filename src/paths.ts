import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'

/**
 * The directory holding package.json: the same answer from the TypeScript
 * sources (tests, dev) and from the bundle in dist/, whatever the working directory.
 */
export function packageRoot (from = __dirname): string {
  let dir = from
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`no package.json above ${from}`)
    dir = parent
  }
  return dir
}
