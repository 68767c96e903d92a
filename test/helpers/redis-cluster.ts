import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster, Redis } from 'ioredis'
import { freePort, waitForRedis } from './redis'

type Teardown = { teardown: (fn: () => unknown) => void }

/*
 * A real Redis Cluster on loopback: `primaries` primaries with `replicas`
 * replicas each, every node a redis-server process, formed with
 * `redis-cli --cluster create`. cluster-node-timeout is short (1 s) so a
 * failover takes seconds. Stopped in teardown.
 */

export interface TestCluster {
  /** REDIS_CLUSTER_NODES for the server: every node as host:port. */
  nodes: string
  ports: number[]
  /** A cluster client for reading keys back. */
  client: Cluster
  /** The primary serving a key's slot. */
  primaryOf (key: string): Promise<number>
  /** The port of each primary. */
  primaries (): Promise<number[]>
  /** SIGKILLs the node on this port. */
  kill (port: number): void
}

/** Whether `primaries` primaries report a replica each with a link that is up. */
async function replicasSynced (ports: number[], primaries: number): Promise<boolean> {
  let up = 0
  for (const port of ports) {
    const node = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 })
    node.on('error', () => {})
    try {
      await node.connect()
      if ((await node.info('replication')).includes('master_link_status:up')) up++
    } catch {
      return false
    } finally {
      node.disconnect()
    }
  }
  return up >= ports.length - primaries
}

export async function startRedisCluster (t: Teardown, opts: { primaries?: number, replicas?: number } = {}): Promise<TestCluster> {
  const primaries = opts.primaries ?? 3
  const replicas = opts.replicas ?? 1
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-cluster-'))
  const children = new Map<number, ChildProcess>()
  t.teardown(() => {
    for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  const ports: number[] = []
  for (let i = 0; i < primaries * (1 + replicas); i++) {
    const port = await freePort()
    ports.push(port)
    // The cluster bus gets a free port of its own: by default it is port +
    // 10000, which may be taken (or past 65535) on a busy machine, and the
    // node then exits at start.
    const busPort = await freePort()
    children.set(port, spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-port', String(busPort),
      // Its own directory: a replica writes the RDB of a full sync there.
      '--dir', dir, '--dbfilename', `dump-${port}.rdb`,
      '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '1000',
      // Replicas sync at once (the default waits 5 s for more replicas to share one transfer).
      '--repl-diskless-sync-delay', '0',
      '--save', '', '--appendonly', 'no', '--loglevel', 'warning'
    ], { stdio: ['ignore', 'ignore', 'inherit'] }))
  }
  await Promise.all(ports.map(port => waitForRedis(port, `cluster node ${port}`, children.get(port))))
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map(p => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { encoding: 'utf8' })
  if (create.status !== 0) {
    const diag = ports.map(p => `${p}: ${spawnSync('redis-cli', ['-p', String(p), 'cluster', 'nodes'], { encoding: 'utf8' }).stdout.trim()} | dbsize ${spawnSync('redis-cli', ['-p', String(p), 'dbsize'], { encoding: 'utf8' }).stdout.trim()} | exit ${children.get(p)?.exitCode}`).join('\n')
    throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}\n${diag}`)
  }

  const client = new Cluster(ports.map(port => ({ host: '127.0.0.1', port })), { scaleReads: 'master' })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  // Every node must agree that the cluster is whole before the servers start.
  for (let i = 0; ; i++) {
    const states = await Promise.all(ports.map(async (port) => {
      const node = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 })
      node.on('error', () => {})
      try {
        await node.connect()
        return String(await node.cluster('INFO'))
      } catch {
        return ''
      } finally {
        node.disconnect()
      }
    }))
    // …and every replica must have synced, or it could not take over from a failed primary.
    if (states.every(s => s.includes('cluster_state:ok')) && await replicasSynced(ports, primaries)) break
    if (i > 200) throw new Error('the cluster did not become ok')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  await client.ping()

  const killed = new Set<number>()
  type Slots = Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>
  /** CLUSTER SLOTS as a node that is still up sees it. */
  const slotsNow = async (): Promise<Slots> => {
    const port = ports.find(p => !killed.has(p)) ?? 0
    const node = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 })
    node.on('error', () => {})
    try {
      await node.connect()
      return await node.cluster('SLOTS') as unknown as Slots
    } finally {
      node.disconnect()
    }
  }
  const primaryPorts = async (): Promise<number[]> => [...new Set((await slotsNow()).map(s => s[2][1]))].sort((a, b) => a - b)
  return {
    nodes: ports.map(p => `127.0.0.1:${p}`).join(','),
    ports,
    client,
    primaries: primaryPorts,
    async primaryOf (key) {
      const slot = await client.cluster('KEYSLOT', key) as number
      const slots = await slotsNow()
      const owner = slots.find(([from, to]) => slot >= from && slot <= to)
      if (owner === undefined) throw new Error(`no node serves slot ${slot}`)
      return owner[2][1]
    },
    kill (port) {
      killed.add(port)
      children.get(port)?.kill('SIGKILL')
    }
  }
}
