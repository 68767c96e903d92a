import t from 'tap'
import { startRedis } from './helpers/redis'
import { waitForOutput } from './helpers/process'
import { FAULT_SETTINGS, PING, faultVerdict, movedAway, sleep, startFleetNode, stopAndCount, streamingPairs } from './helpers/fleet'

/*
 * Fleet faults (docs/protocol.md §3.3, "through faults that are not deaths"):
 * an instance freezes (SIGSTOP) for longer than INSTANCE_DEAD_AFTER_MS and
 * wakes up (SIGCONT), on real server processes sharing one real
 * redis-server. 16 pairs stream numbered ICE candidates every 20 ms, each
 * with an id; clients notice the dead link (no pong) and resume elsewhere.
 *
 * What may happen to each message:
 * - delivered once, in order: everything, except
 * - refused to its sender by id with `unavailable` (not applied): what the
 *   frozen instance read after it woke but no longer owned (frames its
 *   clients wrote into it before they left; frames sent to it for peers that
 *   had moved, when newer ones from the same sender already reached them).
 * Nothing is lost, duplicated or reordered, no refused message is delivered,
 * nobody hears peer-disconnected, every identity is kept. Before the fence
 * (round 3) this run lost 1,534 messages and delivered 1,182 out of order.
 */

t.setTimeout(120_000)

const PAIRS = 16
const FREEZE_MS = 8000
/** The clients' detection bound: a ping interval, its timeout, a backoff, a resume. */
const DETECTION_MS = PING.everyMs + PING.timeoutMs + 1500

t.test('an instance frozen past INSTANCE_DEAD_AFTER_MS wakes up without delivering stale frames or losing any', async (t) => {
  t.ok(FREEZE_MS > FAULT_SETTINGS.INSTANCE_DEAD_AFTER_MS, 'frozen long enough to be declared dead')
  const redis = await startRedis(t, { own: true })
  const nodes = await Promise.all(['n1', 'n2', 'n3'].map(name => startFleetNode(t, redis, name)))
  const frozen = nodes[0]
  if (frozen === undefined) throw new Error('no node')
  const peers = await streamingPairs(t, nodes, PAIRS, 'freeze')
  const onFrozen = peers.filter(p => p.server === frozen.name)
  t.equal(onFrozen.length, 11, 'clients on the instance that will freeze')

  await sleep(1000)
  const frozenAt = Date.now()
  frozen.server.child.kill('SIGSTOP')
  await sleep(FREEZE_MS)
  frozen.server.child.kill('SIGCONT')
  const wokeAt = Date.now()
  await sleep(4000)
  const r = await stopAndCount(t, peers, 'freeze', [{ label: 'SIGSTOP', at: frozenAt }, { label: 'SIGCONT', at: wokeAt }])

  faultVerdict(t, r, ['unavailable', 'outcome_unknown'], PAIRS * 2 * 250)
  movedAway(t, onFrozen, frozen.name, frozenAt, DETECTION_MS)
  t.same(peers.filter(p => p.conns.some(c => c.server === frozen.name && c.openedAt > wokeAt)).map(p => p.name), [], 'nobody went back to the woken instance')
  t.ok(await waitForOutput(frozen.server, /event loop stalled/), 'the woken instance noticed its stall')
  t.ok(await waitForOutput(frozen.server, /"sessions":11,"lost":11,"rewritten":0,"msg":"session ownership checked"/), 'and let go of the 11 sessions claimed elsewhere before acting on what it read')
  for (const p of peers) p.dispose()
})
