import Fastify, { type FastifyInstance } from 'fastify'
import { buildApp, type AppOptions } from '../src/app'
import { loadConfig, type EnvSource } from '../src/config'
import { serverOptions } from '../src/server-options'
import { startRedis, type TestRedis } from './helpers/redis'
import { listen } from './helpers/ws'

type Teardown = { teardown: (fn: () => unknown) => void }

/** Quiet, permissive defaults for tests; each test overrides what it exercises. */
export const TEST_ENV: EnvSource = {
  LOG_LEVEL: process.env['TEST_LOG_LEVEL'] ?? 'silent',
  API_RATE_LIMIT_MAX: '100000',
  DISABLE_JOIN_RATE_LIMIT: 'true'
}

/** Builds the app exactly as the process entry does (same options), ready to inject; closed in teardown. */
export async function buildTestApp (t: Teardown, env: EnvSource = {}, opts: Omit<AppOptions, 'env'> = {}): Promise<FastifyInstance> {
  const merged = { ...TEST_ENV, ...env }
  const app = Fastify(serverOptions(loadConfig(merged)))
  await app.register(buildApp, { ...opts, env: merged })
  t.teardown(() => app.close())
  await app.ready()
  return app
}

export type StoreMode = 'memory' | 'redis'
export const STORE_MODES: StoreMode[] = ['memory', 'redis']

/** The env that selects a store: nothing for memory, a real Redis (own prefix) otherwise. */
export async function storeEnv (t: Teardown, mode: StoreMode): Promise<{ env: EnvSource, redis?: TestRedis }> {
  if (mode === 'memory') return { env: {} }
  const redis = await startRedis(t)
  return { env: { REDIS_URL: redis.url, KEY_PREFIX: redis.prefix }, redis }
}

export const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/**
 * How a test lets a TTL or rate-limit window run out on a store. The in-memory
 * store reads `now` (pass it as `memoryStoreNow`, or as the store's `now`):
 * the wall clock plus an offset that `elapse` moves forward at once. Redis
 * expires keys on its own clock, so on Redis `elapse` really waits.
 */
export function storeTime (mode: StoreMode): { now: () => number, elapse: (ms: number) => Promise<void> } {
  let offsetMs = 0
  return {
    now: () => Date.now() + offsetMs,
    elapse: mode === 'memory'
      ? async (ms) => { offsetMs += ms }
      : async (ms) => { await sleep(ms) }
  }
}

/** Polls `check` until it holds or the time is up; resolves whether it held. */
export async function until (check: () => boolean | Promise<boolean>, timeoutMs = 5000, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await sleep(everyMs)
  }
  return false
}

/** An app on the given store, listening on a free loopback port. */
export async function serveApp (t: Teardown, mode: StoreMode, env: EnvSource = {}, opts: Omit<AppOptions, 'env'> = {}) {
  const { env: storeVars } = await storeEnv(t, mode)
  const app = await buildTestApp(t, { ...storeVars, ...env }, opts)
  return { app, ...await listen(t, app) }
}
