import pino from 'pino'
import { loadConfig } from '../../src/config'
import { createRedisClient, type RedisClient } from '../../src/redis/client'
import { RedisLink } from '../../src/redis/link'
import { instanceRecordTtlS } from '../../src/redis/keys'
import { createRedisStore } from '../../src/store/redis'
import { createRedisMesh } from '../../src/cluster/redis-mesh'
import type { Store } from '../../src/store/types'
import type { EndedSession, Mesh } from '../../src/signaling/mesh'
import type { BusMessage } from '../../src/signaling/bus'
import { FakeCluster, silentLogger } from './fake-mesh'
import type { TestRedis } from './redis'
import type { TestCluster } from './redis-cluster'
import { sleep } from '../helper'

/*
 * The worlds the Mesh contract suite (test/mesh-contract.test.ts) runs in:
 * the in-process FakeCluster, and createRedisMesh on a real redis-server,
 * standalone or Cluster. A world makes nodes (each a Store and a started
 * Mesh, with what its events delivered), lets time pass (the fake's clock,
 * or real time on Redis), freezes the process, and loses Redis's data.
 */

type Teardown = { teardown: (fn: () => unknown) => void }

/** Short windows, so that liveness acts within a second on Redis. */
export const DEAD_AFTER_MS = 600
export const GRACE_MS = 200

export interface ContractNode {
  readonly name: string
  readonly store: Store
  readonly mesh: Mesh
  /** Messages from other nodes, in order of arrival. */
  readonly messages: BusMessage[]
  /** Each sessionsEnded event. */
  readonly ended: EndedSession[][]
  /** How often registryLost was emitted. */
  lost: number
}

export interface MeshWorld {
  /** A node with its store and its mesh, started. */
  node (name: string): Promise<ContractNode>
  /** Lets `ms` of time pass (delivering what is in flight). */
  elapse (ms: number): Promise<void>
  /** The process stops for `ms`: no timer of any node runs meanwhile. */
  freeze (ms: number): Promise<void>
  /** Redis loses every key (a restart without persistence, a failover to an empty replica). */
  loseData (): Promise<void>
}

export type WorldKind = 'fake' | 'redis' | 'redis-cluster'

function recorder (name: string, store: Store, mesh: Mesh): ContractNode {
  const node: ContractNode = { name, store, mesh, messages: [], ended: [], lost: 0 }
  return node
}

const events = (node: ContractNode) => ({
  message: (msg: BusMessage) => { node.messages.push(msg) },
  sessionsEnded: (ended: EndedSession[]) => { node.ended.push(ended) },
  registryLost: () => { node.lost++ }
})

export function fakeWorld (t: Teardown): MeshWorld {
  const c = new FakeCluster({ limits: { resumeGraceMs: GRACE_MS }, deadAfterMs: DEAD_AFTER_MS })
  t.teardown(() => c.close())
  return {
    async node (name) {
      const { store, mesh } = c.bare(name)
      const node = recorder(name, store, mesh)
      await mesh.start(events(node))
      return node
    },
    elapse: (ms) => c.advance(ms),
    async freeze (ms) { c.clock.set(c.clock.now() + ms) },
    async loseData () { c.loseData() }
  }
}

/** Deletes every key under `prefix` on each primary. */
async function deleteKeys (clients: RedisClient[], prefix: string): Promise<void> {
  for (const client of clients) {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      // One at a time: on a cluster the keys of one primary span many slots.
      for (const key of keys) await client.del(key)
    } while (cursor !== '0')
  }
}

export function redisWorld (t: Teardown, target: { redis: TestRedis } | { cluster: TestCluster }, prefix: string): MeshWorld {
  const cluster = 'cluster' in target
  const config = loadConfig(cluster
    ? { REDIS_CLUSTER_NODES: target.cluster.nodes, REDIS_CONNECT_TIMEOUT_MS: '2000' }
    : { REDIS_URL: target.redis.url, REDIS_CONNECT_TIMEOUT_MS: '2000' })
  const log = pino({ level: 'silent' })
  const settings = { keyPrefix: prefix, sessionTtlS: 60, roomEmptyTtlS: 30, deadAfterMs: DEAD_AFTER_MS, resumeGraceMs: GRACE_MS }
  return {
    async node (name) {
      const redis = createRedisClient(config, log, 'commands')
      const subscriber = createRedisClient(config, log, 'subscriber')
      await Promise.all([redis.connect(), subscriber.connect()])
      const link = new RedisLink({ redis, log: silentLogger(), timeoutMs: 2000, healthIntervalMs: 200, maxWriteBufferBytes: 1 << 24 })
      const store = createRedisStore({
        instanceId: name,
        roomTtlS: 60,
        roomEmptyTtlS: 30,
        joinLimitMax: 100,
        joinLimitWindowMs: 1000,
        trackMaxRefsPerDay: 10,
        redis,
        link,
        keyPrefix: prefix,
        ownedTtlS: instanceRecordTtlS(settings)
      })
      const mesh = createRedisMesh({ ...settings, rooms: store, redis, subscriber, link, node: name, log: silentLogger() })
      t.teardown(async () => {
        await mesh.stop()
        await mesh.leave([])
        link.stop()
        redis.disconnect()
        subscriber.disconnect()
      })
      await link.waitHealthy(2000)
      const node = recorder(name, store, mesh)
      await mesh.start(events(node))
      return node
    },
    elapse: async (ms) => { await sleep(ms) },
    async freeze (ms) {
      // The whole process blocks, as a SIGSTOP or a paused VM would stop it.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
    },
    async loseData () {
      await deleteKeys(cluster ? target.cluster.client.nodes('master') : [target.redis.client], prefix)
    }
  }
}

/**
 * Polls `check` while time passes in small steps (the fake's clock, or real
 * time on Redis); resolves whether it held within `budgetMs`.
 */
export async function eventually (world: MeshWorld, check: () => boolean | Promise<boolean>, budgetMs = 5000): Promise<boolean> {
  const stepMs = 25
  for (let spent = 0; spent <= budgetMs; spent += stepMs) {
    if (await check()) return true
    await world.elapse(stepMs)
  }
  return false
}
