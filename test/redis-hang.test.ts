import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { startRedis, type TestRedis } from './helpers/redis'
import { postJson, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { until } from './helper'

/*
 * A hung Redis (SIGSTOP: it accepts bytes and answers nothing), with real
 * server processes. Every operation answered "unavailable" must stay
 * unapplied after SIGCONT, memory must stay bounded however much is sent
 * meanwhile, and /ready must follow the hang both ways.
 */

async function cluster (t: Test, count: number, env: Record<string, string> = {}): Promise<{ redis: TestRedis, servers: ServerProcess[] }> {
  const redis = await startRedis(t, { own: true })
  // A frozen Redis must not outlive a failed test (teardown kills it; SIGCONT first is not needed for SIGKILL).
  const servers = await Promise.all(Array.from({ length: count }, (_, i) => startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: `node${i + 1}`,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    REDIS_CONNECT_TIMEOUT_MS: '1000',
    LOG_LEVEL: 'warn',
    ...env
  })))
  return { redis, servers }
}

async function createRoom (server: ServerProcess, roomId: string): Promise<number> {
  return (await postJson(server, '/api/create_room', { roomId })).status
}

/** Resident memory of a process, from /proc (MiB). */
function rssMiB (server: ServerProcess): number {
  const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1])
  return kb / 1024
}

const readyStatus = async (server: ServerProcess): Promise<number> => (await fetch(`${server.http}/ready`)).status

t.test('relays during a hang: all answered (unavailable, or outcome_unknown for those in flight), none delivered after SIGCONT, memory bounded, target kept', async (t) => {
  const { redis, servers: [s1, s2] } = await cluster(t, 2, { WS_RATE_PER_S: '100000', WS_RATE_BURST: '100000', WS_ABUSE_MAX_DROPS: '100000' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  t.equal(await createRoom(s1, 'hang'), 200)
  const x = await connect(t, s1.ws)
  const y = await connect(t, s2.ws)
  await join(x, 'hang')
  await join(y, 'hang')
  await x.next('ready')

  const before = rssMiB(s1)
  redis.pause()
  t.teardown(() => redis.resume())
  // 3 × 300 offers of 60 KiB to a peer on the other instance: 53 MiB of relays.
  const sdp = 'v=0 ' + 'a'.repeat(60 * 1024)
  const answered = (): number => x.all('error').filter(f => f.id?.startsWith('o') === true).length
  const rss = [before]
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 300; i++) x.send('offer', { peerId: y.peerId, offer: { type: 'offer', sdp } }, `o${round}-${i}`)
    t.ok(await until(() => answered() === 300 * (round + 1), 20_000), `every relay answered (${answered()}/${300 * (round + 1)})`)
    rss.push(rssMiB(s1))
  }
  // Relays already written to the hung Redis may have run (as far as the
  // sender can tell): outcome_unknown. Everything after the circuit opened
  // was not applied: unavailable.
  const codes = x.all('error').map(f => String(f.data.code))
  t.same([...new Set(codes)].filter(code => code !== 'unavailable' && code !== 'outcome_unknown'), [], 'each one reported unavailable or outcome_unknown')
  const afterTrip = x.all('error').filter(f => f.id?.startsWith('o0-') !== true)
  t.same([...new Set(afterTrip.map(f => f.data.code))], ['unavailable'], 'once the circuit is open (rounds 2 and 3), unavailable: nothing was written')
  t.comment(`sender RSS by round (MiB): ${rss.map(r => r.toFixed(0)).join(' → ')}`)
  // Bounded means a plateau: the first round fills the allowed write buffer
  // and the heap; later rounds must not add their payload on top (unbounded
  // buffering grew by ~32 MiB per round here).
  const later = (rss[3] ?? 0) - (rss[1] ?? 0)
  t.ok(later < 24, `sender's memory plateaus: +${later.toFixed(0)} MiB over the last 600 relays (RSS ${rss.map(r => r.toFixed(0)).join(' → ')} MiB)`)

  redis.resume()
  t.ok(await until(async () => await readyStatus(s1) === 200 && await readyStatus(s2) === 200, 10_000), 'both ready again')
  // A marker sent after recovery: once it is in, anything from the hang would have been too.
  const marker = await x.request('offer', { peerId: y.peerId, offer: { type: 'offer', sdp: 'v=0 marker' } }, 'error').catch(() => null)
  t.equal(marker, null, 'the marker is accepted')
  const got = await y.next('offer', 5000)
  t.equal(got.data.offer.sdp, 'v=0 marker', 'the first offer the target sees is the marker: nothing reported unavailable was applied later')
  t.equal(y.all('offer').length, 1)
  t.equal(y.ws.readyState, y.ws.OPEN, 'the target stays connected')
})

t.test('joins during a hang: the per-connection queue is capped (rate_limited), all answered promptly, none applied later', async (t) => {
  const { redis, servers: [s1] } = await cluster(t, 1, { WS_RATE_PER_S: '100000', WS_RATE_BURST: '100000', WS_ABUSE_MAX_DROPS: '100000', WS_MAX_QUEUED_MESSAGES: '8' })
  if (s1 === undefined) throw new Error('a server expected')
  t.equal(await createRoom(s1, 'later'), 200)
  const z = await connect(t, s1.ws)

  redis.pause()
  t.teardown(() => redis.resume())
  const count = 100
  for (let i = 0; i < count; i++) z.send('join', { roomId: 'later' }, `j${i}`)
  const answers = (): typeof z.inbox => z.inbox.filter(f => f.id?.startsWith('j') === true)
  // Unbounded queueing would answer one join per command timeout (1 s): 100 s.
  t.ok(await until(() => answers().length === count, 10_000), `every join answered (${answers().length}/${count})`)
  const limited = answers().filter(f => f.type === 'error' && f.data.code === 'rate_limited').length
  const unavailable = answers().filter(f => f.type === 'joinResponse' && f.data.code === 'unavailable').length
  t.ok(limited >= count - 9, `frames beyond the queue refused at once (${limited} rate_limited)`)
  t.equal(limited + unavailable, count, `the rest answered unavailable (${unavailable})`)
  const rest = await fetch(`${s1.http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId: 'phantom' }) })
  t.equal(rest.status, 503, 'a REST write during the hang is 503')

  redis.resume()
  t.ok(await until(async () => await readyStatus(s1) === 200, 10_000), 'ready again')
  const members = await redis.client.smembers(`${redis.prefix}room:later:sockets`)
  t.same(members, [], 'no join reported unavailable became a membership after SIGCONT')
  t.equal(await redis.client.exists(`${redis.prefix}room:phantom`), 0, 'the 503 create_room did not create the room later')
  t.equal(await createRoom(s1, 'phantom'), 200, 'so the id is still free')
})

t.test('/ready follows a hang with no traffic: 503 within seconds, answered without waiting for Redis, 200 after SIGCONT', async (t) => {
  const { redis, servers: [s1] } = await cluster(t, 1, { REDIS_CONNECT_TIMEOUT_MS: '3000' })
  if (s1 === undefined) throw new Error('a server expected')
  t.equal(await readyStatus(s1), 200)
  redis.pause()
  t.teardown(() => redis.resume())
  const pausedAt = Date.now()
  t.ok(await until(async () => await readyStatus(s1) === 503, 8000, 200), 'unready within a few seconds')
  t.comment(`unready after ${Date.now() - pausedAt} ms`)
  // Once the hang is known, probes are answered at once, not after a 3 s command timeout.
  const started = Date.now()
  t.equal(await readyStatus(s1), 503)
  t.ok(Date.now() - started < 1500, `a probe during the hang is answered from the circuit (${Date.now() - started} ms)`)
  t.equal((await fetch(`${s1.http}/health`)).status, 200, 'liveness unaffected')

  redis.resume()
  const resumedAt = Date.now()
  t.ok(await until(async () => await readyStatus(s1) === 200, 8000, 200), 'ready again within a few seconds')
  t.comment(`ready after ${Date.now() - resumedAt} ms`)
})
