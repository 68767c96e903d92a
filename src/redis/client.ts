import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../schemas/config'
import { brief } from '../signaling/log-limiter'

const WAYS = ['REDIS_URL', 'REDIS_HOST', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'] as const

/** One Redis (direct or through Sentinel) or a Redis Cluster: the commands this server uses are the same. */
export type RedisClient = Redis | Cluster

/** The one way Redis is configured, or null for the in-memory store. Throws when several are set. */
export function redisWay (config: Config): typeof WAYS[number] | null {
  const set = WAYS.filter(way => config[way] !== undefined)
  if (set.length > 1) throw new Error(`configure Redis one way only: ${set.join(' and ')} are both set (REDIS_URL, REDIS_HOST, REDIS_SENTINELS or REDIS_CLUSTER_NODES)`)
  return set[0] ?? null
}

/** Whether the config selects Redis (REDIS_URL, REDIS_HOST as older deployments set it, REDIS_SENTINELS or REDIS_CLUSTER_NODES). */
export function redisConfigured (config: Config): boolean {
  return redisWay(config) !== null
}

/** Whether the config selects Redis Cluster (hash-tagged keys, sharded pub/sub). */
export function clusterConfigured (config: Config): boolean {
  return config.REDIS_CLUSTER_NODES !== undefined
}

/** REDIS_SENTINELS or REDIS_CLUSTER_NODES as ioredis wants them; throws on an entry that is not host:port. */
export function sentinelList (value: string, variable = 'REDIS_SENTINELS'): Array<{ host: string, port: number }> {
  return value.split(',').map(s => s.trim()).filter(Boolean).map((entry) => {
    const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(entry)
    const port = Number(match?.[2])
    if (match === null || port < 1 || port > 65535) throw new Error(`${variable}: "${entry}" is not host:port`)
    return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port }
  })
}

/**
 * Connects, or gives up after `timeoutMs` (the client goes on trying by
 * itself). A cluster's connect waits for a usable slot map, which may never
 * come while its nodes are unreachable: start-up must not wait on it.
 */
export async function connectWithin (client: RedisClient, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      client.connect(),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`redis not connected within ${timeoutMs} ms`)), timeoutMs) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * A client tuned to fail fast and heal by itself: no offline queue (a command
 * while disconnected fails at once instead of piling up), a command timeout
 * (a hung Redis cannot hang a request), and endless reconnects with a capped
 * backoff. Callers turn failures into 503s.
 */
export function createRedisClient (config: Config, log: FastifyBaseLogger, role: string): RedisClient {
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
  let client: RedisClient
  if (config.REDIS_CLUSTER_NODES !== undefined) {
    const { lazyConnect: _lazy, enableOfflineQueue, enableAutoPipelining, autoPipeliningIgnoredCommands, ...nodeOptions } = options
    const clusterOptions: ClusterOptions = {
      lazyConnect: true,
      enableOfflineQueue,
      enableAutoPipelining,
      autoPipeliningIgnoredCommands,
      // Writes and reads go to the primaries: a replica may lag behind a join.
      scaleReads: 'master',
      // The instance channels are sharded (SSUBSCRIBE): one subscriber per shard.
      shardedSubscribers: role === 'subscriber',
      clusterRetryStrategy: (times) => Math.min(times * 100, 1000),
      redisOptions: { ...nodeOptions, password: config.REDIS_PASSWORD }
    }
    client = new Cluster(sentinelList(config.REDIS_CLUSTER_NODES, 'REDIS_CLUSTER_NODES'), clusterOptions)
  } else if (config.REDIS_SENTINELS !== undefined) {
    client = new Redis({
      ...options,
      sentinels: sentinelList(config.REDIS_SENTINELS),
      name: config.REDIS_SENTINEL_NAME,
      password: config.REDIS_PASSWORD,
      sentinelPassword: config.REDIS_SENTINEL_PASSWORD,
      // Hear +switch-master from the Sentinels instead of waiting for the old primary to fail.
      failoverDetector: true,
      sentinelRetryStrategy: (times) => Math.min(times * 100, 1000)
    })
  } else if (config.REDIS_URL !== undefined) {
    client = new Redis(config.REDIS_URL, options)
  } else {
    client = new Redis({ ...options, host: config.REDIS_HOST, port: config.REDIS_PORT, password: config.REDIS_PASSWORD })
  }

  const clientLog = log.child({ redis: role })
  let healthy = false
  client.on('ready', () => {
    if (!healthy) clientLog.info('redis connected')
    healthy = true
  })
  // ioredis emits 'error' on every failed reconnect; log the transition, not the storm.
  client.on('error', (err) => {
    // An outage is expected, not a bug: what happened, without a stack.
    if (healthy) clientLog.error({ error: brief(err) }, 'redis connection lost, reconnecting')
    else clientLog.debug({ error: brief(err) }, 'redis still unreachable')
    healthy = false
  })
  client.on('end', () => { healthy = false })
  return client
}
