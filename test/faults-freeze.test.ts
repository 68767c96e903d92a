import t, { type Test } from 'tap'
import { startRedis, type TestRedis } from './helpers/redis'
import { ChurnPeer, LiveSet, describeLost, pairUp, settle, summary, tally, type Endpoint } from './helpers/churn'
import { createRoom, startServer, type ServerProcess } from './helpers/process'

/*
 * Fleet faults (docs/protocol.md §3.3, "through faults that are not deaths"):
 * an instance freezes (SIGSTOP) for longer than INSTANCE_DEAD_AFTER_MS and
 * wakes up (SIGCONT), on real server processes sharing one real
 * redis-server. 16 pairs stream numbered ICE candidates every 20 ms, each
 * with an id; clients notice a dead link like a careful app (app-level ping
 * every 500 ms, no pong within 2 s: drop and resume on another instance).
 *
 * Count of what may happen to each message:
 * - delivered once, in order: everything, except
 * - refused to its sender by id with `unavailable`: the frames that the
 *   frozen instance read after it woke but no longer owned (written into
 *   its sockets by clients that had left, or sent to it for peers that had
 *   moved) and frames overtaken by newer ones from the same sender.
 * Nothing is lost, nothing arrives twice or out of order, no refused message
 * is delivered, nobody hears peer-disconnected, every identity is kept.
 */

t.setTimeout(120_000)

const PAIRS = 16
const TICK_MS = 20
const FREEZE_MS = 8000
const RESUME_GRACE_MS = 6000
const INSTANCE_DEAD_AFTER_MS = 3000
/** The clients' detection bound: a ping every 500 ms, 2 s for its pong, up to 200 ms backoff. */
const PING = { everyMs: 500, timeoutMs: 2000 }
const DETECTION_MS = PING.everyMs + PING.timeoutMs + 200

interface Node extends Endpoint { server: ServerProcess, http: string }

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

async function startNode (t: Test, redis: TestRedis, name: string): Promise<Node> {
  const server = await startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: name,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    WS_RATE_PER_S: '2000',
    WS_RATE_BURST: '2000',
    RESUME_GRACE_MS: String(RESUME_GRACE_MS),
    INSTANCE_DEAD_AFTER_MS: String(INSTANCE_DEAD_AFTER_MS),
    HEARTBEAT_MS: '1000',
    LOG_LEVEL: 'info'
  })
  return { name, ws: server.ws, http: server.http, server }
}

t.test('an instance frozen past INSTANCE_DEAD_AFTER_MS wakes up without delivering stale frames or losing any', async (t) => {
  const redis = await startRedis(t, { own: true })
  const nodes = await Promise.all(['n1', 'n2', 'n3'].map(name => startNode(t, redis, name)))
  const [frozen] = nodes as [Node, Node, Node]
  const live = new LiveSet(nodes)
  const at = (i: number): Node => nodes[i % nodes.length] as Node
  const peers: ChurnPeer[] = []
  await Promise.all(Array.from({ length: PAIRS }, async (_, i) => {
    const a = new ChurnPeer(`p${i}a`, { live, ping: PING })
    const b = new ChurnPeer(`p${i}b`, { live, ping: PING })
    t.teardown(() => { a.dispose(); b.dispose() })
    peers.push(a, b)
    const roomId = `freeze-${i}`
    await createRoom(at(i), roomId)
    if (!await a.connect(at(i)) || !await b.connect(at(i + 1))) throw new Error('could not connect')
    await pairUp(a, b, roomId)
  }))
  const onFrozen = peers.filter(p => p.server === frozen.name)
  t.ok(onFrozen.length >= PAIRS / 2, `${onFrozen.length} clients start on the instance that will freeze`)

  for (const p of peers) p.startStreaming(TICK_MS)
  await sleep(1000)
  const frozenAt = Date.now()
  frozen.server.child.kill('SIGSTOP')
  await sleep(FREEZE_MS)
  frozen.server.child.kill('SIGCONT')
  const wokeAt = Date.now()
  await sleep(4000)
  for (const p of peers) p.stopStreaming()
  await settle(peers)

  const r = tally(peers)
  t.comment(summary('freeze', r))
  if (r.lost.length > 0) t.comment(`lost: ${describeLost(r.lost, [{ label: 'SIGSTOP', at: frozenAt }, { label: 'SIGCONT', at: wokeAt }])}`)
  t.equal(r.lost.length, 0, 'no accepted message lost')
  t.equal(r.duplicated, 0, 'no message delivered twice')
  t.equal(r.reordered, 0, 'no message delivered after a newer one from the same sender')
  t.equal(r.refusedButDelivered, 0, 'no refused message delivered')
  t.same([...r.refused.keys()].filter(code => code !== 'unavailable'), [], 'refusals only with unavailable (not applied)')
  t.same([...r.errors.keys()].filter(code => code !== 'unavailable'), [], 'no other error reached a client')
  t.equal(r.peerDisconnected, 0, 'nobody heard peer-disconnected')
  t.equal(r.identityChanges, 0, 'every identity kept')
  t.equal(r.foreign + r.garbage + r.notWelcomeFirst, 0, 'no stranger, no garbage, welcome first')
  t.ok(r.accepted > PAIRS * 2 * 10_000 / TICK_MS / 2, `${r.accepted} messages accepted`)

  // Every client of the frozen instance resumed elsewhere within the detection bound, and stayed away.
  for (const p of onFrozen) {
    const moved = p.conns.find(c => c.server !== frozen.name && c.openedAt > frozenAt)
    t.ok(moved !== undefined && moved.resumed, `${p.name} resumed on another instance`)
    if (moved !== undefined) t.ok(moved.openedAt - frozenAt < DETECTION_MS + 1500, `${p.name} moved ${moved.openedAt - frozenAt} ms after the freeze`)
  }
  const back = peers.filter(p => p.conns.some(c => c.server === frozen.name && c.openedAt > wokeAt))
  t.same(back.map(p => p.name), [], 'nobody is served by the woken instance\'s stale sessions')
  // The woken instance noticed: it checked ownership before acting on what it read.
  t.match(frozen.server.output(), /event loop stalled/, 'the woken instance noticed its stall')
  t.match(frozen.server.output(), /session ownership checked/, 'and checked which sessions it still owns')
  for (const p of peers) p.dispose()
})
