import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'

type Teardown = { teardown: (fn: () => unknown) => void }

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => { typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')) })
    })
  })
}

export interface TestRedis {
  url: string
  /** A key prefix unique to this test, so files can share one Redis in parallel. */
  prefix: string
  /** A plain client for reading keys back directly. */
  client: Redis
  /** Stops the server (only for a server this helper started). */
  stop (): Promise<void>
  /** Starts it again on the same port. */
  start (): Promise<void>
  /** Freezes the process (SIGSTOP): a hung Redis that accepts bytes and answers nothing. */
  pause (): void
  /** Thaws it (SIGCONT): it then runs whatever reached it meanwhile. */
  resume (): void
  readonly owned: boolean
}

/**
 * Resolves once a Redis (server or Sentinel) answers PING on this port;
 * throws after about 5 s, or as soon as `child` has exited.
 */
export async function waitForRedis (port: number, what = 'redis-server', child?: ChildProcess): Promise<void> {
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
  probe.on('error', () => {})
  try {
    for (let i = 0; i < 200; i++) {
      if (child !== undefined && child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`)
      try {
        await probe.connect()
        await probe.ping()
        return
      } catch {
        probe.disconnect()
        await new Promise(resolve => setTimeout(resolve, 25))
      }
    }
    throw new Error(`${what} did not start`)
  } finally {
    probe.disconnect()
  }
}

async function spawnRedis (port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'
  ], { stdio: ['ignore', 'ignore', 'inherit'] })
  await waitForRedis(port, 'redis-server', child)
  return child
}

async function kill (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}

/**
 * A real redis-server for a test: the one in REDIS_URL when set (shared, so a
 * unique prefix isolates the test), otherwise a fresh one on a free port.
 * Pass `{ own: true }` for tests that stop and restart Redis: those always get
 * their own server.
 */
export async function startRedis (t: Teardown, opts: { own?: boolean } = {}): Promise<TestRedis> {
  const prefix = `t${randomBytes(4).toString('hex')}:`
  const external = process.env['REDIS_URL']
  if (external !== undefined && external !== '' && opts.own !== true) {
    const client = new Redis(external)
    t.teardown(() => client.quit())
    return {
      url: external,
      prefix,
      client,
      owned: false,
      async stop () { throw new Error('cannot stop an external REDIS_URL server') },
      async start () { throw new Error('cannot start an external REDIS_URL server') },
      pause () { throw new Error('cannot pause an external REDIS_URL server') },
      resume () { throw new Error('cannot resume an external REDIS_URL server') }
    }
  }

  const port = await freePort()
  let child: ChildProcess | undefined = await spawnRedis(port)
  const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, retryStrategy: (times) => Math.min(times * 50, 500) })
  client.on('error', () => {})
  t.teardown(async () => {
    client.disconnect()
    if (child !== undefined) await kill(child)
  })
  return {
    url: `redis://127.0.0.1:${port}`,
    prefix,
    client,
    owned: true,
    async stop () {
      if (child !== undefined) await kill(child)
      child = undefined
    },
    async start () {
      child ??= await spawnRedis(port)
    },
    pause () {
      child?.kill('SIGSTOP')
    },
    resume () {
      child?.kill('SIGCONT')
    }
  }
}
