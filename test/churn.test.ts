import t, { type Test } from 'tap'
import { startRedis, type TestRedis } from './helpers/redis'
import { OFFER, startServer, type ServerProcess } from './helpers/process'
import { ChurnPeer, LiveSet, describeLost, pairUp, settle, summary, tally, type Endpoint, type Frame, type LostMessage, type Tally } from './helpers/churn'
import { until } from './helper'

/*
 * Message delivery while instances come and go (docs/protocol.md §3.3, §3.5),
 * on real server processes (node dist/server.js) sharing one real
 * redis-server. 24 pairs of peers stream numbered ICE candidates to each
 * other; clients reconnect and resume like the shipped client. Every
 * accepted message must arrive exactly once and in order, except (SIGKILL)
 * the ones that were inside the dead process when it died.
 */

t.setTimeout(180_000)

const PAIRS = 24
const TICK_MS = 20
/** At least this many accepted messages, or a run proves nothing (2 s of full streaming). */
const MIN_ACCEPTED = PAIRS * 2 * (1000 / TICK_MS) * 2
const RESUME_GRACE_MS = 5000
const INSTANCE_DEAD_AFTER_MS = 1500

interface Node extends Endpoint { server: ServerProcess, http: string }

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** Whether `p` settles within `ms`. */
async function within (p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([p.then(() => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

function serverEnv (redis: TestRedis, instanceId: string): Record<string, string> {
  return {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: instanceId,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    WS_RATE_PER_S: '2000',
    WS_RATE_BURST: '2000',
    RESUME_GRACE_MS: String(RESUME_GRACE_MS),
    INSTANCE_DEAD_AFTER_MS: String(INSTANCE_DEAD_AFTER_MS),
    SHUTDOWN_TIMEOUT_MS: '10000',
    LOG_LEVEL: 'warn'
  }
}

async function startNode (t: Test, redis: TestRedis, name: string): Promise<Node> {
  const server = await startServer(t, serverEnv(redis, name))
  return { name, ws: server.ws, http: server.http, server }
}

async function cluster (t: Test, count: number): Promise<{ redis: TestRedis, nodes: Node[] }> {
  const redis = await startRedis(t, { own: true })
  const nodes = await Promise.all(Array.from({ length: count }, (_, i) => startNode(t, redis, `n${i + 1}`)))
  return { redis, nodes }
}

async function createRoom (node: Node, roomId: string): Promise<void> {
  const res = await fetch(`${node.http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId }) })
  const body = await res.json() as { success?: boolean }
  if (!res.ok || body.success !== true) throw new Error(`create_room ${roomId}: ${res.status} ${JSON.stringify(body)}`)
}

/** Peers disposed in teardown, so no socket or reconnect timer outlives the test. */
function peer (t: Test, name: string, live?: LiveSet, backoff?: () => number): ChurnPeer {
  const p = new ChurnPeer(name, { live, backoff })
  t.teardown(() => p.dispose())
  return p
}

async function connected (p: ChurnPeer, node: Node): Promise<ChurnPeer> {
  if (!await p.connect(node)) throw new Error(`${p.name} could not connect to ${node.name}`)
  return p
}

/**
 * 24 pairs, each in its own room: pair i has one peer on node i mod 3 and the
 * other on the next node, except every 4th pair, which shares one node.
 */
async function setupPairs (t: Test, nodes: Node[], live: LiveSet, tag: string): Promise<ChurnPeer[]> {
  const at = (i: number): Node => nodes[i % nodes.length] as Node
  const pairs = Array.from({ length: PAIRS }, (_, i) => ({
    roomId: `churn-${tag}-${i}`,
    a: peer(t, `p${i}a`, live),
    b: peer(t, `p${i}b`, live),
    nodeA: at(i),
    nodeB: i % 4 === 3 ? at(i) : at(i + 1)
  }))
  await Promise.all(pairs.map(async ({ roomId, a, b, nodeA, nodeB }) => {
    await createRoom(nodeA, roomId)
    await Promise.all([connected(a, nodeA), connected(b, nodeB)])
    await pairUp(a, b, roomId)
  }))
  return pairs.flatMap(({ a, b }) => [a, b])
}

/**
 * Keeps every client connected until the instances that went away have been
 * cleaned up after: a peer-disconnected for a peer that resumed would show up
 * by then. Cleanup ends with the instance's removal from the `instances` set
 * (a drained instance with nothing left leaves it at once; a dead one is
 * reaped after it was noticed and the resume grace).
 */
async function outlastCleanup (t: Test, redis: TestRedis, live: LiveSet, lastFaultAt: number): Promise<void> {
  const limit = lastFaultAt + 2 * INSTANCE_DEAD_AFTER_MS + RESUME_GRACE_MS + 10_000 - Date.now()
  const cleaned = await until(async () => {
    const instances = await redis.client.zrange(`${redis.prefix}instances`, 0, -1)
    return instances.every(id => live.names().includes(id.split('.')[0] as string))
  }, Math.max(limit, 1000), 100)
  t.ok(cleaned, 'every instance that went away was cleaned up after')
  // Its notices are posted right after that removal, by another connection:
  // give them the time the old fixed wait allowed as well.
  await sleep(Math.max(0, lastFaultAt + 2 * INSTANCE_DEAD_AFTER_MS + RESUME_GRACE_MS + 500 - Date.now()))
}

function verdict (t: Test, r: Tally, peers: ChurnPeer[], live: LiveSet, minResumes: number): void {
  t.equal(r.lost.length, 0, 'no accepted message lost')
  t.equal(r.duplicated, 0, 'no message delivered twice')
  t.equal(r.reordered, 0, 'no message overtook an earlier one from the same sender')
  t.equal(r.errors.get('peer_not_found') ?? 0, 0, 'no spurious peer_not_found (both peers stay in their room)')
  t.equal(r.peerDisconnected, 0, 'no spurious peer-disconnected')
  t.equal(r.identityChanges, 0, 'every resume kept its peerId')
  t.equal(r.foreign + r.garbage + r.notWelcomeFirst, 0, 'no frame from a stranger, no malformed frame, welcome always first')
  t.ok(r.accepted >= MIN_ACCEPTED, `${r.accepted} messages accepted (at least ${MIN_ACCEPTED})`)
  t.ok(r.resumes >= minResumes, `${r.resumes} resumes (at least ${minResumes})`)
  const stranded = peers.filter(p => p.server === null || !live.names().includes(p.server)).map(p => p.name)
  t.same(stranded, [], 'every client ends up connected to a live instance')
}

t.test('rolling restart: every accepted message arrives once, in order', async (t) => {
  const { redis, nodes } = await cluster(t, 3)
  const live = new LiveSet(nodes)
  const peers = await setupPairs(t, nodes, live, 'roll')
  const events: Array<{ label: string, at: number }> = []

  for (const p of peers) p.startStreaming(TICK_MS)
  await sleep(1500)
  let next = nodes.length
  let lastFaultAt = Date.now()
  for (const old of nodes) {
    const replacement = await startNode(t, redis, `n${++next}`)
    live.add(replacement)
    live.remove(old.name)
    lastFaultAt = Date.now()
    events.push({ label: `SIGTERM ${old.name}`, at: lastFaultAt })
    old.server.child.kill('SIGTERM')
    const exit = await old.server.exited
    t.equal(exit.code, 0, `${old.name} drained and exited 0`)
    await sleep(1500)
  }
  for (const p of peers) p.stopStreaming()
  await settle(peers)
  await outlastCleanup(t, redis, live, lastFaultAt)
  await settle(peers)

  const r = tally(peers)
  t.comment(summary('rolling restart', r))
  if (r.lost.length > 0) t.comment(`lost: ${describeLost(r.lost, events)}`)
  // Every peer started on an original instance, so each one moved at least once.
  verdict(t, r, peers, live, peers.length)
  for (const p of peers) p.dispose()
})

t.test('SIGKILL: only what was inside the dead process may be lost', async (t) => {
  const { redis, nodes } = await cluster(t, 3)
  const live = new LiveSet(nodes)
  const peers = await setupPairs(t, nodes, live, 'crash')
  const victim = nodes[1] as Node

  for (const p of peers) p.startStreaming(TICK_MS)
  await sleep(1500)
  live.remove(victim.name)
  // Redis hands a message to the dead process's subscription until it has
  // noticed the closed socket: watch for that moment too.
  const [channel] = await redis.client.pubsub('CHANNELS', `${redis.prefix}instance:${victim.name}.*`) as string[]
  if (channel === undefined) throw new Error('victim channel not found')
  const killAt = Date.now()
  victim.server.child.kill('SIGKILL')
  let redisSawAt = Infinity
  while (Date.now() - killAt < 5000) {
    const [, subscribers] = await redis.client.pubsub('NUMSUB', channel) as [string, number]
    if (Number(subscribers) === 0) {
      redisSawAt = Date.now()
      break
    }
  }
  await victim.server.exited
  await sleep(3000)
  for (const p of peers) p.stopStreaming()
  await settle(peers)
  await outlastCleanup(t, redis, live, killAt)
  await settle(peers)

  // In flight at the crash, i.e. inside the dead process: frames of a pair
  // that passed through it (sender or target connected to it) and were sent
  // before the crash was noticed (the victim client saw its connection close;
  // for frames to a victim also until Redis dropped the dead subscription,
  // since until then Redis handed messages to the dead process). What the
  // dead process held is one contiguous run of each pair's stream (frames
  // before it were delivered, frames after it were re-routed), so a pair's
  // losses are excused only as a single run sent before that moment; a second
  // gap, or any loss sent later, fails.
  const cutoff = (m: LostMessage): number | undefined => {
    const sender = m.from.connAt(victim.name, killAt)
    const target = m.to.connAt(victim.name, killAt)
    const bySender = sender !== undefined && m.sentOn === victim.name ? sender.closedAt ?? Infinity : -Infinity
    const byTarget = target !== undefined ? Math.max(target.closedAt ?? Infinity, redisSawAt) : -Infinity
    const at = Math.max(bySender, byTarget)
    return at === -Infinity ? undefined : at
  }
  const lostSeqs = (from: ChurnPeer): number[] => {
    const out: number[] = []
    for (let seq = 1; seq <= from.seq; seq++) if (!from.erroredSeqs.has(seq) && from.partner?.got.has(seq) !== true) out.push(seq)
    return out
  }
  const inFlight = (m: LostMessage): boolean => {
    const until = cutoff(m)
    if (until === undefined) return false
    const run = lostSeqs(m.from)
    const first = run[0] ?? m.seq
    const last = run.at(-1) ?? m.seq
    const contiguous = last - first + 1 === run.length
    return contiguous && run.every(seq => (m.from.sentAt[seq - 1] ?? Infinity) <= until)
  }
  const r = tally(peers, inFlight)
  t.comment(summary('crash', r, 'in-flight at crash'))
  if (r.lost.length > 0) t.comment(`lost (not in flight): ${describeLost(r.lost, [{ label: `SIGKILL ${victim.name}`, at: killAt }])}`)
  const onDead = peers.map(p => p.connAt(victim.name, killAt)).filter(c => c !== undefined)
  const seenAfter = onDead.map(c => (c.closedAt ?? Infinity) - killAt).sort((x, y) => x - y)
  t.comment(`crash: ${onDead.length} clients on ${victim.name} saw their connection close ${seenAfter[0]}..${seenAfter.at(-1)} ms after the SIGKILL; Redis dropped its subscription after ${redisSawAt - killAt} ms`)
  const moved = onDead.length
  t.ok(moved > 0, `${moved} peers were on the killed instance`)
  verdict(t, r, peers, live, moved)
  for (const p of peers) p.dispose()
})

t.test('resume race: a relay sent right after the resumed welcome reaches the peer on its new instance', async (t) => {
  const { nodes: [n1, n2, n3] } = await cluster(t, 3)
  if (n1 === undefined || n2 === undefined || n3 === undefined) throw new Error('three nodes expected')
  await createRoom(n1, 'resume-race')
  const a = await connected(peer(t, 'A'), n1)
  // V reconnects at once, and only to n3.
  const v = await connected(peer(t, 'V', new LiveSet([n3]), () => 0), n2)
  await pairUp(a, v, 'resume-race')

  // As soon as V's welcome on n3 arrives, A sends it an offer.
  let sent = false
  const welcomed = new Promise<void>(resolve => {
    v.onWelcome = () => {
      v.onWelcome = null
      sent = a.send({ type: 'offer', data: { peerId: v.peerId, offer: OFFER }, id: 'o1' })
      resolve()
    }
  })
  n2.server.child.kill('SIGKILL')
  t.ok(await within(welcomed, 10_000), 'V resumed on n3')
  t.ok(sent, 'A sent the offer on V\'s welcome')
  t.equal(v.identityChanges, 0, 'V resumed with its peerId')
  t.equal(v.server, n3.name, 'V is on n3')
  const offer = await v.next('offer', 5000).catch(() => undefined)
  t.ok(offer !== undefined, 'V received the offer sent right after its welcome')
  t.equal(offer?.data.from, a.peerId, 'from A')
  t.same(a.inbox.filter(f => f.type === 'error').map(f => f.data.code), [], 'A got no error')
})

t.test('bus injection: correlation ids cannot alter the framing between instances', async (t) => {
  const { nodes: [n1, n2, n3] } = await cluster(t, 3)
  if (n1 === undefined || n2 === undefined || n3 === undefined) throw new Error('three nodes expected')
  await createRoom(n1, 'inject')
  const m = await connected(peer(t, 'M'), n1)
  const v = await connected(peer(t, 'V'), n2)
  await pairUp(m, v, 'inject')

  const badIds = [
    'x\n' + JSON.stringify({ type: 'ready', data: { peerId: 'FORGED' } }),
    'nul\u0000byte',
    'y'.repeat(65)
  ]
  const marker = (f: Frame) => String(f.data?.offer?.sdp ?? '')
  const attack = (label: string) => {
    badIds.forEach((id, i) => m.send({ type: 'offer', data: { peerId: v.peerId, offer: { type: 'offer', sdp: `v=0\r\ns=bad-${label}-${i}\r\n` } }, id }))
    // Travels the same path after the bad ones: once it is in, they would be too.
    m.send({ type: 'offer', data: { peerId: v.peerId, offer: { type: 'offer', sdp: `v=0\r\ns=ok-${label}\r\n` } }, id: 'ok' })
  }
  // What reached V and M during one round only.
  const round = () => ({ v: v.inbox.length, garbage: v.garbage.length, m: m.inbox.length })
  const check = async (label: string, from: ReturnType<typeof round>) => {
    const ok = await v.next(f => f.type === 'offer' && marker(f).includes(`ok-${label}`), 5000).catch(() => undefined)
    t.ok(ok !== undefined, `${label}: the valid offer after the bad ones arrived`)
    const errors = () => m.inbox.slice(from.m).filter(f => f.type === 'error')
    await until(() => errors().length >= badIds.length, 2000)
    t.same(errors().map(f => f.data.code), badIds.map(() => 'invalid_message'), `${label}: every bad id answered invalid_message, nothing else`)
    const got = v.inbox.slice(from.v)
    t.same(got.filter(f => f.type === 'offer' && marker(f).includes('bad')).map(marker), [], `${label}: no offer with a bad id relayed`)
    t.same(got.filter(f => f.type === 'ready'), [], `${label}: no forged ready`)
    t.same(v.garbage.slice(from.garbage), [], `${label}: no malformed frame reached V`)
  }

  const live = round()
  attack('live')
  await check('live', live)

  // V drops; once n2 has noticed, its messages are held there and handed over when V resumes on n3.
  v.drop()
  const connections = async () => {
    const text = await (await fetch(`${n2.http}/metrics`)).text()
    return Number(/^privydrop_ws_connections (\S+)$/m.exec(text)?.[1])
  }
  t.ok(await until(async () => await connections() === 0, 5000), 'n2 saw V drop')
  const held = round()
  attack('held')
  // M's instance answers the ping after it has handled (and passed on) everything before it.
  t.equal((await m.request('ping', {})).type, 'pong')
  t.ok(await v.connect(n3, true), 'V resumed on n3')
  t.equal(v.identityChanges, 0, 'with its peerId')
  await check('held', held)
})
