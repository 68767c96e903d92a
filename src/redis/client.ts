import { Redis, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../schemas/config'

/** Whether the config selects Redis (REDIS_URL, or REDIS_HOST as older deployments set it). */
export function redisConfigured (config: Config): boolean {
  return config.REDIS_URL !== undefined || config.REDIS_HOST !== undefined
}

/**
 * A client tuned to fail fast and heal by itself: no offline queue (a command
 * while disconnected fails at once instead of piling up), a command timeout
 * (a hung Redis cannot hang a request), and endless reconnects with a capped
 * backoff. Callers turn failures into 503s.
 */
export function createRedisClient (config: Config, log: FastifyBaseLogger, role: string): Redis {
  const options: RedisOptions = {
    lazyConnect: true,
    connectTimeout: config.REDIS_CONNECT_TIMEOUT_MS,
    commandTimeout: config.REDIS_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    // A command that got no answer before its connection dropped was reported
    // as failed; sending it again after the reconnect would apply it anyway.
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times) => Math.min(times * 100, 1000),
    // Commands issued in one event-loop turn (a burst of relays read from one
    // socket) go out in one write instead of one syscall each.
    enableAutoPipelining: true,
    // ioredis runs one auto-pipeline at a time: after a hang, the next batch
    // waits until the stalled one has timed out. The health check (TIME) and
    // the readiness probe (PING) go around it, so they see the new connection.
    autoPipeliningIgnoredCommands: ['time', 'ping'],
    connectionName: `privydrop:${role}`
  }
  const client = config.REDIS_URL !== undefined
    ? new Redis(config.REDIS_URL, options)
    : new Redis({ ...options, host: config.REDIS_HOST, port: config.REDIS_PORT, password: config.REDIS_PASSWORD })

  const clientLog = log.child({ redis: role })
  let healthy = false
  client.on('ready', () => {
    if (!healthy) clientLog.info('redis connected')
    healthy = true
  })
  // ioredis emits 'error' on every failed reconnect; log the transition, not the storm.
  client.on('error', (err) => {
    if (healthy) clientLog.error({ err }, 'redis connection lost, reconnecting')
    else clientLog.debug({ err }, 'redis still unreachable')
    healthy = false
  })
  client.on('end', () => { healthy = false })
  return client
}
