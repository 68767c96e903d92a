import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import { Redis } from 'ioredis'
import pino from 'pino'
import { freePort, startRedis, waitForRedis } from './helpers/redis'
import { startFakeSentinel } from './helpers/fake-sentinel'
import { startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { sleep, until } from './helper'
import { loadConfig } from '../src/config'
import { createRedisClient } from '../src/redis/client'

/*
 * Redis Sentinel, all real processes on loopback: a primary, a replica, three
 * sentinels and two server instances. The primary is SIGKILLed during a
 * cross-instance session; the instances must follow the promoted replica by
 * themselves, with their sockets still open. That failover is timing
 * dependent; the race it once lost now and then (ioredis ending a client for
 * good) is also reproduced exactly, against a fake Sentinel.
 */

function spawnRedis (t: Test, args: string[]): ChildProcess {
  const child = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return child
}

interface SentinelSetup { primary: ChildProcess, primaryPort: number, replicaPort: number, sentinels: string }

async function sentinelSetup (t: Test): Promise<SentinelSetup> {
  const dir = mkdtempSync(joinPath(tmpdir(), 'privydrop-sentinel-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // --dir: a replica writes the RDB of its full sync into its working directory, not into the repository.
  const base = ['--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning']
  const primaryPort = await freePort()
  const primary = spawnRedis(t, ['--port', String(primaryPort), ...base])
  await waitForRedis(primaryPort, 'primary')
  const replicaPort = await freePort()
  spawnRedis(t, ['--port', String(replicaPort), '--replicaof', '127.0.0.1', String(primaryPort), ...base])
  await waitForRedis(replicaPort, 'replica')

  const ports: number[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    const file = joinPath(dir, `sentinel-${i}.conf`)
    // Sentinel rewrites its config file, so each gets a writable one of its own.
    writeFileSync(file, [
      `port ${port}`,
      'bind 127.0.0.1',
      `sentinel monitor mymaster 127.0.0.1 ${primaryPort} 2`,
      'sentinel down-after-milliseconds mymaster 1000',
      'sentinel failover-timeout mymaster 5000',
      'sentinel parallel-syncs mymaster 1'
    ].join('\n') + '\n')
    spawnRedis(t, [file, '--sentinel', '--loglevel', 'warning'])
    await waitForRedis(port, 'sentinel')
    ports.push(port)
  }
  // The replica is in sync and known to every sentinel before anything is killed.
  const replica = new Redis({ port: replicaPort, host: '127.0.0.1' })
  t.teardown(() => replica.disconnect())
  t.ok(await until(async () => /master_link_status:up/.test(await replica.info('replication')), 10_000), 'replica in sync')
  for (const port of ports) {
    const sentinel = new Redis({ port, host: '127.0.0.1' })
    t.ok(await until(async () => {
      const replicas = await sentinel.call('SENTINEL', 'REPLICAS', 'mymaster') as unknown[]
      return replicas.length === 1
    }, 15_000), `sentinel ${port} knows the replica`)
    sentinel.disconnect()
  }
  return { primary, primaryPort, replicaPort, sentinels: ports.map(p => `127.0.0.1:${p}`).join(',') }
}

const ready = async (s: ServerProcess): Promise<boolean> => (await fetch(`${s.http}/ready`)).status === 200

t.test('config: exactly one way to reach Redis, sentinels as host:port', async (t) => {
  t.throws(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_SENTINELS: '127.0.0.1:2' }), /REDIS_URL and REDIS_SENTINELS/)
  t.throws(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_HOST: '127.0.0.1' }), /REDIS_URL and REDIS_HOST/)
  t.throws(() => loadConfig({ REDIS_SENTINELS: '127.0.0.1' }), /REDIS_SENTINELS: "127.0.0.1" is not host:port/)
  const config = loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379, [::1]:26380' })
  t.equal(config.REDIS_SENTINEL_NAME, 'mymaster', 'default primary name')
  // An override that blanks REDIS_URL (compose cannot unset a variable) leaves one way.
  t.equal(loadConfig({ REDIS_URL: '', REDIS_SENTINELS: '127.0.0.1:26379' }).REDIS_URL, undefined, 'an empty optional variable is unset')
})

t.test('a reconnect cut short by the failover detector does not leave the client ended for good', async (t) => {
  // What a real failover does now and then (see OwnedRedis in
  // src/redis/client.ts): the primary drops the connection, the reconnect asks
  // the Sentinel for the primary, and +switch-master reaches the failover
  // detector of the dropped connection before the Sentinel has answered.
  const redis = await startRedis(t, { own: true })
  const sentinel = await startFakeSentinel(t, { host: '127.0.0.1', port: Number(new URL(redis.url).port) })
  const config = loadConfig({ REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`, REDIS_CONNECT_TIMEOUT_MS: '1000' })
  const client = createRedisClient(config, pino({ level: 'silent' }), 'test')
  t.teardown(() => client.disconnect())
  await client.connect()
  t.ok(await until(() => sentinel.subscribers > 0, 2000, 5), 'the failover detector listens')

  sentinel.hold()
  const before = sentinel.lookups
  await redis.client.call('CLIENT', 'KILL', 'TYPE', 'normal')
  t.ok(await until(() => sentinel.pending > 0 && sentinel.lookups > before, 3000, 5), 'the reconnect is asking the Sentinel for the primary')
  t.equal(client.status, 'connecting')
  sentinel.switchMaster()
  await sleep(50)
  sentinel.release()
  t.ok(await until(() => client.status === 'ready', 5000, 10), `connected again (status ${client.status})`)
  t.equal(await client.ping(), 'PONG', 'and answering')

  await client.quit()
  await sleep(300)
  t.equal(client.status, 'end', 'an end that was asked for stays final')
})

t.test('a failover: both instances follow the new primary by themselves, sockets stay open, sessions survive', async (t) => {
  const setup = await sentinelSetup(t)
  const env = { REDIS_SENTINELS: setup.sentinels, DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: process.env['TEST_LOG_LEVEL'] ?? 'warn', REDIS_CONNECT_TIMEOUT_MS: '1000' }
  const [s1, s2] = await Promise.all([startServer(t, { ...env, INSTANCE_ID: 'node1' }), startServer(t, { ...env, INSTANCE_ID: 'node2' })])
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  const created = await fetch(`${s1.http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId: 'failover' }) })
  t.equal(created.status, 200)
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  await join(a, 'failover')
  await join(b, 'failover')
  await a.next('ready')
  a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 before' } })
  t.equal((await b.next('offer')).data.offer.sdp, 'v=0 before', 'cross-instance relay before the failover')
  // What was written before the kill has reached the replica.
  const replica = new Redis({ port: setup.replicaPort, host: '127.0.0.1' })
  t.teardown(() => replica.disconnect())
  t.ok(await until(async () => (await replica.keys('session:*')).length === 2, 5000), 'sessions replicated')

  const killedAt = Date.now()
  setup.primary.kill('SIGKILL')
  // Both polled at once, so each time is that instance's own.
  const readyAt = await Promise.all([s1, s2].map(async (s) => {
    const ok = await until(() => ready(s).catch(() => false), 15_000, 50)
    if (!ok) t.comment(`${s.http} still unready; the end of its log:\n${s.output().split('\n').slice(-40).join('\n')}`)
    return ok ? Date.now() - killedAt : null
  }))
  t.ok(readyAt.every(ms => ms !== null), 'both ready again without a restart')
  t.equal(await replica.call('ROLE').then(r => (r as string[])[0]), 'master', 'the replica was promoted')

  // The first cross-instance relay that gets through after the kill.
  let relayed: number | null = null
  for (let i = 0; i < 50 && relayed === null; i++) {
    const id = `after-${i}`
    a.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: `v=0 ${id}` } }, id)
    const got = await b.next('offer', 200).catch(() => null)
    if (got !== null) relayed = Date.now() - killedAt
  }
  t.not(relayed, null, 'cross-instance relays work again')
  t.comment(`SIGKILL of the primary → /ready 200: node1 ${readyAt[0] ?? '–'} ms, node2 ${readyAt[1] ?? '–'} ms; first cross-instance relay ${relayed ?? '–'} ms`)
  // How often ioredis gave up a client during this failover (OwnedRedis in src/redis/client.ts reconnected it).
  const gaveUp = (s: ServerProcess): number => s.output().split('redis client gave up reconnecting').length - 1
  t.comment(`clients reconnected after ioredis gave up on them: node1 ${gaveUp(s1)}, node2 ${gaveUp(s2)}`)
  t.equal(a.ws.readyState, a.ws.OPEN, 'sockets stayed open')
  t.equal(b.ws.readyState, b.ws.OPEN)

  // The sessions written before the kill survived it: b resumes on the other instance.
  const token = b.token
  b.drop()
  const b2 = await connect(t, `${s1.ws}?resume=${encodeURIComponent(token)}`)
  t.equal(b2.peerId, b.peerId, 'a session written before the failover resumes after it, on another instance')
  const joined = await b2.request('join', { roomId: 'failover' }, 'joinResponse')
  t.equal(joined.data.success, true, 'joins work on the new primary')
})
