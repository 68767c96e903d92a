import t from 'tap'
import { readFileSync } from 'node:fs'

/*
 * The Node.js versions the project states must agree with the ones it ships
 * and runs: the Dockerfile's base image (every stage on one major), the
 * README's "The Docker image runs Node.js N", package.json's engines, and the
 * Node.js running the tests (CI's).
 */

type Version = [number, number, number]

function version (text: string): Version {
  const m = /^v?(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?$/.exec(text.trim())
  if (m === null) throw new Error(`not a version: ${text}`)
  const part = (s: string | undefined) => (s === undefined || s === 'x' || s === '*' ? 0 : Number(s))
  return [Number(m[1]), part(m[2]), part(m[3])]
}

function compare (a: Version, b: Version): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2]
}

/**
 * Whether an engines range admits a version: alternatives joined by `||`,
 * each one or more of `>=`, `>`, `<=`, `<`, `^` comparators or a bare
 * (partial) version. Enough for engines fields; anything else throws.
 */
function admits (range: string, v: Version): boolean {
  return range.split('||').some(alternative => alternative.trim().replace(/([<>=^])\s+/g, '$1').split(/\s+/).every((comparator) => {
    const m = /^(>=|>|<=|<|\^|=)?\s*(.+)$/.exec(comparator)
    if (m === null) throw new Error(`unsupported range: ${range}`)
    const bound = version(m[2] ?? '')
    const c = compare(v, bound)
    switch (m[1]) {
      case '>=': return c >= 0
      case '>': return c > 0
      case '<=': return c <= 0
      case '<': return c < 0
      case '^': return c >= 0 && v[0] === bound[0]
      default: {
        // A bare version: a partial one ("20", "20.x") is that whole line.
        const given = (m[2] ?? '').split('.').filter(p => /^\d+$/.test(p)).length
        return v.slice(0, given).every((n, i) => n === bound[i])
      }
    }
  }))
}

/** The Dockerfile's base images, one per stage. */
function baseImages (): Array<{ image: string, major: number, variant: string }> {
  const text = readFileSync('deploy/Dockerfile', 'utf8')
  return [...text.matchAll(/^FROM\s+(\S+)/gm)].map((m) => {
    const image = m[1] ?? ''
    const node = /^node:(\d+)-([a-z][\w.-]*)$/.exec(image)
    return { image, major: Number(node?.[1] ?? NaN), variant: node?.[2] ?? '' }
  })
}

/** The one Node.js major every Dockerfile stage runs. */
function imageMajor (): number {
  return baseImages()[0]?.major ?? NaN
}

const engines = (JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } }).engines.node
const running = version(process.version)

t.test('the range parser reads engines fields as npm does', async (t) => {
  t.ok(admits('>=20', [20, 0, 0]))
  t.notOk(admits('>=20', [18, 20, 0]))
  t.ok(admits('^20.19.0 || >=22.12.0', [24, 1, 0]))
  t.notOk(admits('^20.19.0 || >=22.12.0', [22, 11, 0]))
  t.notOk(admits('^20.19.0 || >=22.12.0', [21, 0, 0]))
  t.ok(admits('18 || 20 || >=22', [20, 5, 1]))
  t.notOk(admits('18 || 20 || >=22', [21, 5, 1]))
  t.ok(admits('>= 20.16.0', [20, 16, 0]))
  t.throws(() => admits('~20', [20, 0, 0]))
})

t.test('Dockerfile: every stage runs one Node.js LTS major, pinned by major', async (t) => {
  const images = baseImages()
  t.ok(images.length >= 3, `${images.length} stages`)
  for (const { image, major } of images) {
    t.match(image, /^node:\d+-[a-z]/, `${image}: the official node image, pinned by major and variant`)
    t.ok(Number.isInteger(major), `${image}: a major version`)
  }
  t.same(new Set(images.map(i => i.major)).size, 1, `one Node.js major in every stage: ${images.map(i => i.image).join(', ')}`)
  t.same(new Set(images.map(i => i.variant)).size, 1, 'one image variant in every stage')
  const major = imageMajor()
  t.equal(major % 2, 0, `Node.js ${major} is an LTS line (even major)`)
  t.ok(admits(engines, [major, 0, 0]), `engines ${engines} admits the image's Node.js ${major}`)
})

t.test('the READMEs name the image\'s Node.js major and tag', async (t) => {
  const major = imageMajor()
  const tag = baseImages()[0]?.image ?? ''
  for (const file of ['README.md', 'deploy/README.md']) {
    const text = readFileSync(file, 'utf8').replace(/\s+/g, ' ')
    const stated = [...text.matchAll(/The Docker image runs Node\.js (\d+)\b/g)].map(m => Number(m[1]))
    t.ok(stated.length > 0, `${file} says which Node.js the Docker image runs`)
    for (const n of stated) t.equal(n, major, `${file}: "The Docker image runs Node.js ${n}" matches the Dockerfile (${tag})`)
    for (const m of text.matchAll(/`(node:\d+-[\w.-]+)`/g)) t.equal(m[1], tag, `${file} names the Dockerfile's image`)
  }
})

t.test('engines admits the Node.js running the tests, and the README\'s stated minimum', async (t) => {
  t.ok(admits(engines, running), `engines ${engines} admits ${process.version}`)
  const text = readFileSync('README.md', 'utf8').replace(/\s+/g, ' ')
  const minimum = /Needs Node\.js (\d+\.\d+) or newer/.exec(text)?.[1]
  t.ok(minimum, 'the README states the minimum Node.js')
  const floor = version(minimum ?? '0')
  t.ok(admits(engines, floor), `engines ${engines} admits the stated minimum ${minimum}`)
  t.ok(compare(running, floor) >= 0, `${process.version} is at least the stated minimum ${minimum}`)
  t.match(text, new RegExp(`\`engines\` in \`package\\.json\` \\(\`${engines.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\`\\)`), 'the README quotes the engines field as it is')
  // The minimum is where Node.js 20 loads ES modules with require():
  // content-disposition 3 (via @fastify/static) and cookie 2 (via
  // light-my-request) are ES modules that CommonJS code requires.
  t.equal(process.features.require_module, true, 'require(esm) is on, as the stated minimum promises')
})
