import t from 'tap'
import WebSocket from 'ws'
import { startRedis } from './helpers/redis'
import { createRoom, startServer, type ServerProcess } from './helpers/process'
import { connect, join, type TestClient } from './helpers/ws'
import { until } from './helper'

/*
 * MAX_CONNECTIONS_PER_IP across the fleet (Redis mode): three real server
 * processes on one real redis-server, every client from 127.0.0.1. The cap
 * counts every instance's connections and held sessions for the IP; a killed
 * instance's share stops counting once it is no longer seen alive; a resume
 * of the IP's own held session does not count twice; while Redis is down,
 * each instance enforces the cap on its own.
 */

t.setTimeout(120_000)

const CAP = 4

/** The HTTP status an upgrade gets (101 when accepted); the socket stays open if accepted. */
function upgrade (url: string): Promise<{ status: number, ws: WebSocket | null }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url)
    ws.on('open', () => resolve({ status: 101, ws }))
    ws.on('unexpected-response', (_req, res) => { resolve({ status: res.statusCode ?? 0, ws: null }); ws.terminate() })
    ws.on('error', () => resolve({ status: 0, ws: null }))
  })
}

t.test('the per-IP cap counts across instances, frees room on close and on a dead instance, and falls back per instance without Redis', async (t) => {
  const redis = await startRedis(t, { own: true })
  const env = (id: string): Record<string, string> => ({
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: id,
    MAX_CONNECTIONS_PER_IP: String(CAP),
    INSTANCE_DEAD_AFTER_MS: '1500',
    RESUME_GRACE_MS: '20000',
    REDIS_EVICT_AFTER_MS: '0',
    DISABLE_JOIN_RATE_LIMIT: 'true',
    LOG_LEVEL: 'warn'
  })
  const [n1, n2, n3] = await Promise.all(['n1', 'n2', 'n3'].map(id => startServer(t, env(id)))) as [ServerProcess, ServerProcess, ServerProcess]
  // Every instance has seen the others alive.
  await new Promise(resolve => setTimeout(resolve, 1200))
  await createRoom(n1, 'cap')

  const open: TestClient[] = []
  for (const server of [n1, n1, n2, n2]) open.push(await connect(t, server.ws))
  t.equal((await upgrade(n3.ws)).status, 429, 'four across n1 and n2: the fifth, on n3, gets 429')
  t.equal((await upgrade(n1.ws)).status, 429, 'and on n1')

  // A held session counts, and its resume elsewhere does not count twice.
  const held = open[0] as TestClient
  await join(held, 'cap')
  held.ws.terminate()
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal((await upgrade(n3.ws)).status, 429, 'the dropped connection is held for resume: it still counts')
  const resumed = await upgrade(`${n3.ws}?resume=${encodeURIComponent(held.token)}`)
  t.equal(resumed.status, 101, 'its resume on n3 is admitted: the held session moves, it does not count twice')
  t.teardown(() => resumed.ws?.terminate())
  const shareOf = async (prefix: string): Promise<number> => {
    const shares = await redis.client.hgetall(`${redis.prefix}conns:127.0.0.1`)
    return Number(Object.entries(shares).find(([node]) => node.startsWith(`${prefix}.`))?.[1] ?? 0)
  }
  t.ok(await until(async () => await shareOf('n1') === 1, 5000), 'n1 gives back the share of the session that moved (2 → 1)')
  t.equal(await shareOf('n3'), 1, 'and n3 holds it now')

  // Closing frees room.
  const leaving = open[1] as TestClient
  leaving.ws.close(1000)
  let next: { status: number, ws: WebSocket | null } = { status: 0, ws: null }
  t.ok(await until(async () => {
    next = await upgrade(n3.ws)
    return next.status === 101
  }, 5000, 200), 'a closed connection frees its place (n3 admits again)')
  t.teardown(() => next.ws?.terminate())
  t.equal((await upgrade(n3.ws)).status, 429, 'and only that one')

  // n2 dies with two connections: its share lapses once it is no longer seen alive.
  n2.child.kill('SIGKILL')
  const freed: WebSocket[] = []
  t.teardown(() => { for (const ws of freed) ws.terminate() })
  t.ok(await until(async () => {
    const r = await upgrade(n1.ws)
    if (r.ws !== null) freed.push(r.ws)
    return freed.length === 2
  }, 10_000, 250), 'a killed instance\'s share is released once it is seen dead (two places free)')
  t.equal((await upgrade(n1.ws)).status, 429, 'and no more than its share')

  // Without Redis, each instance enforces the cap on its own.
  await redis.stop()
  t.ok(await until(async () => (await fetch(`${n1.http}/ready`)).status === 503, 10_000), 'n1 sees Redis down')
  const local: WebSocket[] = []
  t.teardown(() => { for (const ws of local) ws.terminate() })
  for (let i = 0; i < CAP + 2; i++) {
    const r = await upgrade(n3.ws)
    if (r.ws !== null) local.push(r.ws)
  }
  t.equal(local.length + 2, CAP, `n3 fills up to the per-instance cap and no further (it had 2, took ${local.length} more)`)
})
