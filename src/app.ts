import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import type { FastifyInstance } from 'fastify'
import type { EnvSource } from './config'
import { allowedOrigins } from './config'
import configPlugin from './plugins/config'
import errorsPlugin from './plugins/errors'
import forwardedForPlugin from './plugins/forwarded-for'
import lifecyclePlugin from './plugins/lifecycle'
import metricsPlugin from './plugins/metrics'
import metricsListenerPlugin from './plugins/metrics-listener'
import storePlugin from './plugins/store'
import docsPlugin from './plugins/docs'
import signalingPlugin from './plugins/signaling'
import healthRoutes from './routes/health'
import metricsRoutes from './routes/metrics'
import apiRoutes from './routes/api'
import wsRoutes from './routes/ws'
import demoRoutes from './routes/demo'

export interface AppOptions {
  /** Configuration variables; defaults to the process environment. */
  env?: EnvSource
  /**
   * Clock of the in-memory store's TTLs and rate-limit window (default
   * `Date.now`), so tests can move time instead of waiting. Redis expires keys
   * on its own clock and ignores it.
   */
  memoryStoreNow?: () => number
}

/**
 * The whole server as one plugin: it creates nothing and listens on nothing,
 * so tests and the process entry register it on an instance of their own.
 */
async function app (fastify: FastifyInstance, opts: AppOptions): Promise<void> {
  await fastify.register(configPlugin, { env: opts.env })
  // First of the app-wide hooks: everything after it sees a clean request.ip.
  await fastify.register(forwardedForPlugin)
  await fastify.register(errorsPlugin)
  await fastify.register(lifecyclePlugin)
  await fastify.register(metricsPlugin)
  await fastify.register(metricsListenerPlugin)
  await fastify.register(storePlugin, { memoryStoreNow: opts.memoryStoreNow })
  await fastify.register(signalingPlugin)
  await fastify.register(cors, {
    origin: corsOrigin(fastify.config.CORS_ORIGIN, fastify.config.CORS_CREDENTIALS),
    credentials: fastify.config.CORS_CREDENTIALS,
    methods: ['GET', 'POST']
  })

  await fastify.register(docsPlugin)
  await fastify.register(healthRoutes)
  // Off in production unless asked for: scrape the METRICS_PORT listener instead.
  if (fastify.config.METRICS_ON_MAIN_PORT) await fastify.register(metricsRoutes, { registry: fastify.metrics.registry })
  await fastify.register(apiRoutes, { prefix: '/api' })
  await fastify.register(wsRoutes)
  if (fastify.config.DEMO_ENABLED) await fastify.register(demoRoutes)
}

/**
 * @fastify/cors's `origin`. With credentials, a callback: a foreign origin
 * (or none) resolves to false, so the response carries no CORS headers at all
 * (with a plain list the plugin would still send Allow-Credentials), and an
 * allowed one is echoed exactly (checkConfig has already refused `*`).
 */
function corsOrigin (value: string, credentials: boolean) {
  const origins = allowedOrigins(value)
  if (!credentials || origins === true) return origins
  const allowed = new Set(origins)
  return (origin: string | undefined, cb: (err: Error | null, origin: string | false) => void): void => {
    cb(null, origin !== undefined && allowed.has(origin) ? origin : false)
  }
}

export const buildApp = fp(app, { name: 'privydrop-app', fastify: '5.x' })
export default buildApp
