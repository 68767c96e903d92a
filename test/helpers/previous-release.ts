import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

/*
 * The previous release, built from the git history, for the upgrade test
 * (test/upgrade.test.ts): instances of it and of this tree share one Redis.
 *
 * Which release that is is written in one place, test/upgrade/previous-release.json
 * ({ version, commit }); bump it there when a release is cut.
 *
 * The build goes to node_modules/.cache/privydrop-previous/<commit>/ (outside
 * the tracked files, and gone with node_modules, whose packages it may use):
 *   - the commit's tree, from `git archive <commit> | tar -x`;
 *   - its dependencies: when its package-lock.json pins the same packages as
 *     this tree's (the same file but for the project's own version, which
 *     every release bumps), `node_modules` is a symlink to this tree's
 *     node_modules; otherwise its own, from `npm ci --prefer-offline`;
 *   - `npm run build:server` (its own build script), giving dist/server.js;
 *   - a stamp (.previous-release.json) with the commit and what the
 *     dependencies are (`own`, or `shared:<digest of the shared lockfile>`).
 * A later run uses it as it is when dist/server.js exists and the stamp
 * matches (same commit and version and, for shared dependencies, the same
 * lockfile here).
 * A build happens in a temporary directory beside it and is renamed into
 * place when complete, so runs at the same time never see half a build: the
 * first rename wins, and the others throw their own build away.
 */

/** The repository root (this file is test/helpers/previous-release.ts). */
const ROOT = resolve(__dirname, '..', '..')
export const RELEASE_FILE = 'test/upgrade/previous-release.json'

export interface ReleaseRef { version: string, commit: string }

export interface PreviousRelease extends ReleaseRef {
  /** The build's directory (its own package.json, src/, dist/). */
  dir: string
  /** Absolute path of its dist/server.js. */
  server: string
  /** Whether this call found the build cached or built it. */
  cached: boolean
  /** How long this call took, ms. */
  ms: number
}

/** The release named in test/upgrade/previous-release.json, checked. */
export function previousReleaseRef (root = ROOT): ReleaseRef {
  const file = join(root, RELEASE_FILE)
  const ref = JSON.parse(readFileSync(file, 'utf8')) as Partial<ReleaseRef>
  if (typeof ref.version !== 'string' || !/^\d+\.\d+\.\d+(-[\w.]+)?$/.test(ref.version)) throw new Error(`${RELEASE_FILE}: "version" must be a semver version, got ${JSON.stringify(ref.version)}`)
  if (typeof ref.commit !== 'string' || !/^[0-9a-f]{40}$/.test(ref.commit)) throw new Error(`${RELEASE_FILE}: "commit" must be a full 40-hex commit id, got ${JSON.stringify(ref.commit)}`)
  return { version: ref.version, commit: ref.commit }
}

interface Stamp { commit: string, version: string, deps: string }
const STAMP = '.previous-release.json'

/**
 * A digest of what a package-lock.json installs: the whole file except the
 * project's own version (top level and packages[""]), so that two releases
 * with the same dependencies share one node_modules.
 */
function lockDigest (file: string): string {
  const lock = JSON.parse(readFileSync(file, 'utf8')) as { version?: string, packages?: Record<string, { version?: string }> }
  delete lock.version
  delete lock.packages?.['']?.version
  return createHash('sha256').update(JSON.stringify(lock)).digest('hex')
}

function readStamp (dir: string): Stamp | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, STAMP), 'utf8')) as Stamp
  } catch {
    return undefined
  }
}

/** Whether `dir` holds a complete build of the release that can run with what is installed here now. */
function usable (dir: string, ref: ReleaseRef, root: string): boolean {
  if (!existsSync(join(dir, 'dist', 'server.js'))) return false
  const stamp = readStamp(dir)
  if (stamp?.commit !== ref.commit || stamp.version !== ref.version) return false
  if (stamp.deps === 'own') return existsSync(join(dir, 'node_modules'))
  const lock = join(root, 'package-lock.json')
  return existsSync(lock) && stamp.deps === `shared:${lockDigest(lock)}` && existsSync(join(dir, 'node_modules'))
}

/**
 * The environment for git, npm and the build: this process's, without what
 * the test runner added (its loaders in NODE_OPTIONS, coverage collection).
 */
function cleanEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  for (const key of Object.keys(env)) {
    if (key === 'NODE_OPTIONS' || key === 'NODE_V8_COVERAGE' || key.startsWith('TAP') || key.startsWith('_TAPJS')) delete env[key]
  }
  return env
}

/** Runs a command; rejects with its output when it fails. */
async function run (cmd: string, args: string[], cwd: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (code === 0) resolve(out)
      else reject(new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed (${signal ?? code}):\n${out}`))
    })
  })
}

/** `git archive <commit> | tar -x -C <dir>`, both checked. */
async function extract (root: string, commit: string, dir: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const git = spawn('git', ['-C', root, 'archive', '--format=tar', commit], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    const tar = spawn('tar', ['-x', '-C', dir], { env: cleanEnv(), stdio: ['pipe', 'ignore', 'pipe'] })
    let errors = ''
    git.stderr.setEncoding('utf8').on('data', (d: string) => { errors += d })
    tar.stderr.setEncoding('utf8').on('data', (d: string) => { errors += d })
    git.stdout.pipe(tar.stdin)
    const exit = (child: typeof git | typeof tar) => new Promise<number | null>(resolve => child.on('close', code => resolve(code)))
    git.on('error', reject)
    tar.on('error', reject)
    Promise.all([exit(git), exit(tar)]).then(([g, x]) => {
      if (g === 0 && x === 0) resolve()
      else reject(new Error(`git archive ${commit} | tar -x failed (git ${g}, tar ${x}): ${errors}`))
    }, reject)
  })
}

/** Throws a message that says what to do when this clone lacks the commit (a shallow clone). */
function checkHistory (root: string, ref: ReleaseRef): void {
  const git = (...args: string[]) => spawnSync('git', ['-C', root, ...args], { env: cleanEnv(), encoding: 'utf8' })
  if (git('cat-file', '-e', `${ref.commit}^{commit}`).status === 0) return
  const shallow = git('rev-parse', '--is-shallow-repository').stdout.trim() === 'true'
  throw new Error(
    `The previous release ${ref.version} (commit ${ref.commit}, named in ${RELEASE_FILE}) is not in this clone's git history` +
    (shallow
      ? ': the clone is shallow. Fetch the whole history with `git fetch --unshallow` (.ci/run does).'
      : `. Fetch it with \`git fetch origin ${ref.commit}\` (or \`git fetch --unshallow\` if the clone is shallow), or fix ${RELEASE_FILE}.`)
  )
}

/** Removes temporary build directories of `commit` left by runs that died (their pid is gone). */
function removeAbandoned (cacheRoot: string, commit: string): void {
  for (const name of readdirSync(cacheRoot)) {
    const match = new RegExp(`^${commit}\\.(?:tmp|stale)-(\\d+)-`).exec(name)
    if (match === null) continue
    try {
      process.kill(Number(match[1]), 0)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(cacheRoot, name), { recursive: true, force: true })
    }
  }
}

/**
 * Builds the previous release (or finds it cached) and returns where its
 * dist/server.js is. `log` hears what is done (for the test's comments).
 */
export async function buildPreviousRelease (opts: { root?: string, cacheRoot?: string, log?: (line: string) => void } = {}): Promise<PreviousRelease> {
  const started = Date.now()
  const root = opts.root ?? ROOT
  const ref = previousReleaseRef(root)
  const cacheRoot = opts.cacheRoot ?? join(root, 'node_modules', '.cache', 'privydrop-previous')
  const dir = join(cacheRoot, ref.commit)
  const result = (cached: boolean): PreviousRelease => ({ ...ref, dir, server: join(dir, 'dist', 'server.js'), cached, ms: Date.now() - started })
  if (usable(dir, ref, root)) return result(true)

  checkHistory(root, ref)
  mkdirSync(cacheRoot, { recursive: true })
  removeAbandoned(cacheRoot, ref.commit)
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`
  const tmp = join(cacheRoot, `${ref.commit}.tmp-${tag}`)
  mkdirSync(tmp)
  try {
    opts.log?.(`building release ${ref.version} (${ref.commit.slice(0, 7)}) in ${tmp}`)
    await extract(root, ref.commit, tmp)
    const theirVersion = (JSON.parse(readFileSync(join(tmp, 'package.json'), 'utf8')) as { version?: string }).version
    if (theirVersion !== ref.version) throw new Error(`${RELEASE_FILE} names version ${ref.version}, but commit ${ref.commit}'s package.json says ${theirVersion}`)

    let deps = 'own'
    const ours = lockDigest(join(root, 'package-lock.json'))
    const theirs = join(tmp, 'package-lock.json')
    if (existsSync(theirs) && lockDigest(theirs) === ours) {
      // Absolute: it survives the rename into place.
      symlinkSync(realpathSync(join(root, 'node_modules')), join(tmp, 'node_modules'), 'dir')
      deps = `shared:${ours}`
      opts.log?.('its package-lock.json pins the same packages as this tree\'s: node_modules shared by symlink')
    } else {
      opts.log?.('its package-lock.json pins other packages than this tree\'s: npm ci --prefer-offline')
      await run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], tmp)
    }
    await run('npm', ['run', 'build:server'], tmp)
    if (!existsSync(join(tmp, 'dist', 'server.js'))) throw new Error(`npm run build:server in ${tmp} wrote no dist/server.js`)
    const stamp: Stamp = { commit: ref.commit, version: ref.version, deps }
    writeFileSync(join(tmp, STAMP), JSON.stringify(stamp, null, 2) + '\n')

    // Into place. Another run may have finished first: use its build if it is usable;
    // replace an unusable one (a build against another lockfile).
    for (let attempt = 0; ; attempt++) {
      try {
        renameSync(tmp, dir)
        return result(false)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err
        if (usable(dir, ref, root)) {
          rmSync(tmp, { recursive: true, force: true })
          return result(true)
        }
        if (attempt >= 3) throw err
        const stale = join(cacheRoot, `${ref.commit}.stale-${tag}`)
        try {
          renameSync(dir, stale)
        } catch {}
        rmSync(stale, { recursive: true, force: true })
      }
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true })
    throw err
  }
}
