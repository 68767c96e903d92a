import t, { type Test } from 'tap'
import { startRedis } from './helpers/redis'
import { startTcpProxy } from './helpers/tcp-proxy'
import { FAULT_SETTINGS, faultVerdict, movedAway, sleep, startFleetNode, stopAndCount, streamingPairs } from './helpers/fleet'
import type { LostMessage } from './helpers/churn'
import { until } from './helper'
import { waitForOutput } from './helpers/process'
import WebSocket from 'ws'

/** The HTTP status an upgrade gets (101 when it is accepted). */
function upgradeStatus (url: string): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url)
    ws.on('open', () => { ws.terminate(); resolve(101) })
    ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate() })
    ws.on('error', () => resolve(0))
  })
}

/*
 * Fleet faults (docs/protocol.md §3.3): one instance is cut off from Redis
 * for 10 s while the others keep it, through a TCP proxy in this test
 * (between that instance and a real redis-server), as a black hole (the
 * connections stay open, no byte crosses) and as resets and refusals.
 * 16 pairs stream numbered ICE candidates every 20 ms, each with an id.
 *
 * The cut-off instance must send its clients elsewhere (close 1012, refuse
 * upgrades) after REDIS_EVICT_AFTER_MS, well before the others would reap it;
 * they resume with their identity and nobody hears peer-disconnected. After
 * the heal it must not serve the sessions that moved.
 *
 * What may happen to each message:
 * - delivered once, in order: everything, except
 * - refused to its sender by id with `unavailable` (not applied): relays the
 *   cut-off instance could not publish, and what it read after the heal but
 *   no longer owned, when newer frames from the same sender had reached the
 *   target elsewhere.
 * Before round 3 nobody moved (0 of 16), every partner heard a false
 * peer-disconnected, and thousands of relays went to ghosts after the heal.
 */

t.setTimeout(150_000)

const PAIRS = 16
const PARTITION_MS = 10_000
const EVICT_AFTER_MS = 1000
const CONNECT_TIMEOUT_MS = 500

async function scenario (t: Test, variant: 'blackhole' | 'reset'): Promise<void> {
  const redis = await startRedis(t, { own: true })
  const url = new URL(redis.url)
  const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) })
  t.teardown(() => proxy.close())
  const env = { REDIS_EVICT_AFTER_MS: String(EVICT_AFTER_MS), REDIS_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS) }
  const proxied = new URL(redis.url)
  proxied.port = String(proxy.port)
  const nodes = await Promise.all([
    startFleetNode(t, redis, 'n1', { ...env, REDIS_URL: proxied.toString() }),
    startFleetNode(t, redis, 'n2', env),
    startFleetNode(t, redis, 'n3', env)
  ])
  const cut = nodes[0]
  if (cut === undefined) throw new Error('no node')
  t.ok(EVICT_AFTER_MS < FAULT_SETTINGS.INSTANCE_DEAD_AFTER_MS, 'the eviction bound is under INSTANCE_DEAD_AFTER_MS')
  const peers = await streamingPairs(t, nodes, PAIRS, variant)
  const onCut = peers.filter(p => p.server === cut.name)
  t.equal(onCut.length, 11, 'clients on the instance that will be cut off')
  // Every instance must have seen the others alive (a heartbeat) before the fault.
  await sleep(FAULT_SETTINGS.INSTANCE_DEAD_AFTER_MS / 3 + 500)

  const cutAt = Date.now()
  if (variant === 'blackhole') proxy.blackhole()
  else proxy.reset()
  t.ok(await until(async () => (await fetch(`${cut.http}/ready`)).status === 503, 5000), '/ready turns 503 on the cut-off instance')
  // Its clients are sent away: the link is noticed within health interval + timeout, then REDIS_EVICT_AFTER_MS.
  const bound = 1000 + CONNECT_TIMEOUT_MS + EVICT_AFTER_MS + 1500
  t.ok(await until(() => onCut.every(p => p.server !== null && p.server !== cut.name), bound + 2000), 'every client of the cut-off instance moved')
  t.equal(await upgradeStatus(cut.ws), 503, 'the cut-off instance refuses upgrades')
  await sleep(Math.max(0, cutAt + PARTITION_MS - Date.now()))
  proxy.heal()
  const healedAt = Date.now()
  t.ok(await until(async () => (await fetch(`${cut.http}/ready`)).status === 200, 10_000), 'ready again after the heal')
  await sleep(4000)
  // Resets only: what Redis had already written to the cut-off instance's
  // subscription when the connection was reset is gone with it (pub/sub is
  // at most once, as with a SIGKILLed subscriber). Bounded to frames for its
  // clients sent in the last 250 ms before the cut.
  const inFlight = (m: LostMessage): boolean => variant === 'reset' && m.to.serverAt(m.sentAt) === cut.name && m.sentAt >= cutAt - 250 && m.sentAt <= cutAt + 20
  const r = await stopAndCount(t, peers, variant, [{ label: 'cut', at: cutAt }, { label: 'heal', at: healedAt }], inFlight)
  t.ok(r.excused.length <= 100, `in flight in the reset subscription: ${r.excused.length} (at most 100)`)

  faultVerdict(t, r, ['unavailable', 'outcome_unknown'], PAIRS * 2 * 300)
  movedAway(t, onCut, cut.name, cutAt, bound)
  for (const p of onCut) t.ok(p.closeCodes.get(1012) === 1 || p.pingTimeouts > 0, `${p.name} was sent away with 1012 (or noticed the dead link first)`)
  t.ok(onCut.filter(p => p.closeCodes.get(1012) === 1).length >= onCut.length / 2, 'most were sent away with 1012')
  t.ok(await waitForOutput(cut.server, /cut off from Redis: closing connections with 1012/), 'the instance says why it sent its clients away')
  t.ok(await waitForOutput(cut.server, /"lost":11,"rewritten":0,"msg":"session ownership checked"/), 'after the heal it let go of the 11 sessions claimed elsewhere')
  for (const p of peers) p.dispose()
}

t.test('an instance cut off from Redis (black hole) hands its clients over and serves none of them after the heal', t => scenario(t, 'blackhole'))
t.test('an instance cut off from Redis (resets, refusals) hands its clients over and serves none of them after the heal', t => scenario(t, 'reset'))
