import { Cluster, Redis, type Callback, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../schemas/config'
import { brief } from '../brief'
import { PUBLISH_COMMAND } from './scripts'

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
export function hostPortList (value: string, variable: string): Array<{ host: string, port: number }> {
  return value.split(',').map(s => s.trim()).filter(Boolean).map((entry) => {
    const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(entry)
    const port = Number(match?.[2])
    if (match === null || port < 1 || port > 65535) throw new Error(`${variable}: "${entry}" is not host:port`)
    return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port }
  })
}

/** Reconnect delays (ms): quick at first, capped at a second. */
const backoff = (times: number): number => Math.min(times * 100, 1000)

/**
 * ioredis's client, told apart when it is closed on purpose. ioredis gives up
 * on a client for good (status `end`, no further reconnect) when a connect
 * attempt is aborted under it, and with Sentinel that happens in a failover:
 * the failover detector of the connection that just dropped hears
 * +switch-master while the reconnect is still asking the Sentinels for the
 * primary, disconnects the connector, and that attempt fails with
 * "Connection is closed." (ioredis 5.11, SentinelConnector.connect). The
 * instance then stayed unready until restarted, with its command or
 * subscriber connection ended (3 of 15 runs of test/sentinel.test.ts).
 * `createRedisClient` connects such a client again; only an `end` after
 * quit() or disconnect() is final.
 */
class OwnedRedis extends Redis {
  /** Set by quit() and disconnect() until the next connect(): the end that follows was asked for. */
  closedByOwner = false

  override connect (callback?: Callback<void>): Promise<void> {
    this.closedByOwner = false
    return super.connect(callback)
  }

  override disconnect (reconnect = false): void {
    if (!reconnect) this.closedByOwner = true
    super.disconnect(reconnect)
  }

  override quit (callback?: Callback<'OK'>): Promise<'OK'> {
    this.closedByOwner = true
    return super.quit(callback)
  }
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
    retryStrategy: backoff,
    // Commands issued in one event-loop turn (a burst of relays read from one
    // socket) go out in one write instead of one syscall each.
    enableAutoPipelining: true,
    // ioredis runs one auto-pipeline at a time: after a hang, the next batch
    // waits until the stalled one has timed out. The health check (TIME) and
    // the readiness probe (PING) go around it, so they see the new connection.
    // Publishes to other instances are batched per event-loop turn by the mesh
    // already (one call per target instance): a pipeline of its own for each
    // would cost more than the one write it saves.
    autoPipeliningIgnoredCommands: ['time', 'ping', PUBLISH_COMMAND],
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
      clusterRetryStrategy: backoff,
      redisOptions: { ...nodeOptions, password: config.REDIS_PASSWORD }
    }
    client = new Cluster(hostPortList(config.REDIS_CLUSTER_NODES, 'REDIS_CLUSTER_NODES'), clusterOptions)
  } else if (config.REDIS_SENTINELS !== undefined) {
    client = new OwnedRedis({
      ...options,
      sentinels: hostPortList(config.REDIS_SENTINELS, 'REDIS_SENTINELS'),
      name: config.REDIS_SENTINEL_NAME,
      password: config.REDIS_PASSWORD,
      sentinelPassword: config.REDIS_SENTINEL_PASSWORD,
      // Hear +switch-master from the Sentinels instead of waiting for the old primary to fail.
      failoverDetector: true,
      sentinelRetryStrategy: backoff
    })
  } else if (config.REDIS_URL !== undefined) {
    client = new OwnedRedis(config.REDIS_URL, options)
  } else {
    client = new OwnedRedis({ ...options, host: config.REDIS_HOST, port: config.REDIS_PORT, password: config.REDIS_PASSWORD })
  }

  const clientLog = log.child({ redis: role })
  let healthy = false
  let restarts = 0
  client.on('ready', () => {
    if (!healthy) clientLog.info('redis connected')
    healthy = true
    restarts = 0
  })
  // ioredis emits 'error' on every failed reconnect; log the transition, not the storm.
  client.on('error', (err) => {
    // An outage is expected, not a bug: what happened, without a stack.
    if (healthy) clientLog.error({ error: brief(err) }, 'redis connection lost, reconnecting')
    else clientLog.debug({ error: brief(err) }, 'redis still unreachable')
    healthy = false
  })
  // An end nobody asked for (see OwnedRedis) is not final: connect again after
  // the reconnect backoff. A connect() that fails that way ends the client
  // again, which lands here again.
  client.on('end', () => {
    healthy = false
    // (A cluster client reconnects its nodes itself.)
    if (!(client instanceof OwnedRedis) || client.closedByOwner) return
    const owned = client
    clientLog.warn('redis client gave up reconnecting (a connect attempt was aborted); connecting again')
    setTimeout(() => {
      if (owned.closedByOwner || owned.status !== 'end') return
      owned.connect().catch(() => { /* it ended again: the next end retries */ })
    }, backoff(++restarts)).unref()
  })
  return client
}
