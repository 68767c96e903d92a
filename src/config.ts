import { readFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import envSchema from 'env-schema'
import { ConfigSchema, type Config } from '../schemas/config'
import { hostPortList, redisWay } from './redis/client'

export type EnvSource = Record<string, string | undefined>

/** What a boolean variable accepts, in any case and with spaces around (README, `.env.example`). */
export const TRUE_WORDS: ReadonlySet<string> = new Set(['1', 'true', 'yes', 'on'])
export const FALSE_WORDS: ReadonlySet<string> = new Set(['0', 'false', 'no', 'off', ''])
const BOOLEAN_KEYS = Object.entries(ConfigSchema.properties)
  .filter(([, schema]) => (schema as { type?: unknown }).type === 'boolean')
  .map(([key]) => key)

/** Variables without a default: an empty value leaves them unset. */
const REQUIRED_KEYS: readonly string[] = ConfigSchema.required ?? []
const OPTIONAL_KEYS = new Set(Object.keys(ConfigSchema.properties).filter(key => !REQUIRED_KEYS.includes(key)))

/** Developer conveniences that are on by default, except when NODE_ENV=production. */
const DEV_ONLY_SWITCHES = ['LOGS_DEBUG_ENABLED', 'DOCS_ENABLED', 'DEMO_ENABLED', 'METRICS_ON_MAIN_PORT'] as const

/**
 * The process's environment, with a `.env` file in the working directory
 * underneath it (real environment variables win). This is the only place the
 * server reads process.env.
 */
export function readProcessEnv (envFile = '.env'): EnvSource {
  let fromFile: EnvSource = {}
  try {
    fromFile = parseEnv(readFileSync(envFile, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  return { ...fromFile, ...process.env }
}

/**
 * Prepares raw variables for schema validation: boolean words that ajv's
 * coercion does not know (`1`, `yes`, `off`, empty) become `true`/`false`, and the
 * NODE_ENV-dependent defaults are settled here so that nothing else in the
 * code base has to look at NODE_ENV.
 */
export function normalizeEnv (source: EnvSource): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(source)) {
    if (value === undefined || !(key in ConfigSchema.properties)) continue
    // `REDIS_URL=` (a compose override, an .env line left empty) means unset.
    if (value.trim() === '' && OPTIONAL_KEYS.has(key)) continue
    out[key] = value
  }
  for (const key of BOOLEAN_KEYS) {
    const raw = out[key]
    if (raw === undefined) continue
    const word = raw.trim().toLowerCase()
    if (TRUE_WORDS.has(word)) out[key] = 'true'
    else if (FALSE_WORDS.has(word)) out[key] = 'false'
  }
  const production = out['NODE_ENV'] === 'production'
  for (const key of DEV_ONLY_SWITCHES) {
    if (out[key] === undefined) out[key] = String(!production)
  }
  return out
}

/** Options for env-schema / @fastify/env that validate `source` against ConfigSchema. */
export function envOptions (source: EnvSource) {
  return { schema: ConfigSchema, data: normalizeEnv(source), env: false, dotenv: false }
}

/**
 * Validates the environment before Fastify exists (the process entry needs the
 * log level, proxy trust and port to create the instance). Throws an Error whose
 * message names the offending variable, e.g. `env/PORT must be integer`.
 */
export function loadConfig (source: EnvSource): Config {
  const config = envSchema<Config>(envOptions(source))
  checkConfig(config)
  return config
}

/** What the schema cannot say: combinations. Throws an Error naming the variables. */
export function checkConfig (config: Config): void {
  redisWay(config)
  if (config.REDIS_SENTINELS !== undefined) hostPortList(config.REDIS_SENTINELS, 'REDIS_SENTINELS')
  if (config.REDIS_CLUSTER_NODES !== undefined) hostPortList(config.REDIS_CLUSTER_NODES, 'REDIS_CLUSTER_NODES')
  // Browsers refuse `*` with credentials; echoing any origin instead would let every site read answers.
  if (config.CORS_CREDENTIALS && allowedOrigins(config.CORS_ORIGIN) === true) {
    throw new Error('CORS_CREDENTIALS=true needs CORS_ORIGIN to list the allowed origins (not * or empty)')
  }
}

/**
 * Fastify's `trustProxy` option from TRUST_PROXY: false, true, a hop count
 * (trust that many proxies nearest to us), or the proxies' addresses/CIDRs.
 */
export function trustProxyOption (value: string): boolean | string[] | ((address: string, hop: number) => boolean) {
  const v = value.trim().toLowerCase()
  if (v === '' || v === 'false' || v === '0' || v === 'no') return false
  if (v === 'true' || v === 'yes') return true
  if (/^\d+$/.test(v)) {
    const hops = Number(v)
    return (_address, hop) => hop < hops
  }
  return splitList(value)
}

/** Parsed CORS_ORIGIN: `true` for any origin, otherwise the exact list. */
export function allowedOrigins (value: string): true | string[] {
  const list = value.split(',').map(s => s.trim()).filter(Boolean)
  return list.length === 0 || list.includes('*') ? true : list
}

export function splitList (value: string): string[] {
  return value.split(',').map(s => s.trim()).filter(Boolean)
}
