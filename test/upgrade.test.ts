import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { startRedis, type TestRedis } from './helpers/redis'
import { OFFER, createRoom, startServer, type ServerProcess } from './helpers/process'
import { ChurnPeer, LiveSet, describeLost, failureSummary, settle, summary, tally, type Endpoint, type Tally } from './helpers/churn'
import { buildPreviousRelease } from './helpers/previous-release'
import { until } from './helper'

/*
 * A rolling deploy across versions, and its rollback (issue 24): instances of
 * the previous release (built from the git history by
 * helpers/previous-release.ts; which release is in
 * test/upgrade/previous-release.json) and of this tree (dist/server.js) share
 * one real redis-server.
 *
 * Each run starts from three instances of one version with pairs streaming
 * numbered ICE candidates across them (each pair's peers on different
 * instances) and some clients giving up their connection and resuming on
 * another instance (moveTo) while their partner streams to them. It
 * then replaces the instances one at a time with the other version: start
 * the new one, then SIGTERM the old one, whose clients resume elsewhere (the
 * product's drain). While both versions run, clients are moved across
 * versions (they resume on an instance of the other version, both
 * ways), and a new pair meets across an old and a new instance: join, ready,
 * offer, answer, then candidates, which it keeps streaming.
 *
 * The upgrade goes previous → current; the rollback, on the fleet the
 * upgrade left, current → previous, with a fresh set of pairs. Each run is
 * counted on its own (t.comment) and must show: nothing lost, duplicated or
 * reordered, nothing refused and no error at all, every resume with its
 * peerId, and no peer-disconnected.
 */

t.setTimeout(240_000)

const PAIRS = 12
const TICK_MS = 20
const SETTINGS = { RESUME_GRACE_MS: 5000, INSTANCE_DEAD_AFTER_MS: 1500, SHUTDOWN_TIMEOUT_MS: 10_000 }
/** How far every sender's stream must move on after each step before the next one (0.5 s of it): traffic keeps flowing. */
const FLOW = 25
/** Every sender had at least this many messages accepted. */
const MIN_PER_SENDER = 2 * FLOW
/**
 * After the last SIGTERM, how long a spurious peer-disconnected may take to
 * show: a session that did not survive its move is ended by the reaper once
 * its instance is dead (INSTANCE_DEAD_AFTER_MS, plus up to a third of it for
 * the last heartbeat) and the grace is over, and the notice follows (2 s).
 */
const QUIET_MS = SETTINGS.INSTANCE_DEAD_AFTER_MS * 4 / 3 + SETTINGS.RESUME_GRACE_MS + 2000

interface Build { label: 'previous' | 'current', version: string, script: string }
interface Node extends Endpoint { server: ServerProcess, http: string, build: Build }

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** Rejects after `ms` with `what`. */
async function bounded<T> (p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(what())), ms) })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

let started = 0
async function startNode (t: Test, redis: TestRedis, build: Build): Promise<Node> {
  const name = `${build.label === 'previous' ? 'prev' : 'cur'}${++started}`
  const server = await startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: name,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    WS_RATE_PER_S: '2000',
    WS_RATE_BURST: '2000',
    // The clients stand for different users; here they all come from 127.0.0.1.
    MAX_CONNECTIONS_PER_IP: '1000',
    RESUME_GRACE_MS: String(SETTINGS.RESUME_GRACE_MS),
    INSTANCE_DEAD_AFTER_MS: String(SETTINGS.INSTANCE_DEAD_AFTER_MS),
    SHUTDOWN_TIMEOUT_MS: String(SETTINGS.SHUTDOWN_TIMEOUT_MS),
    LOG_LEVEL: 'warn'
  }, { script: build.script })
  // The build that runs is the one meant (its /health reports its package.json version).
  const health = await (await fetch(`${server.http}/health`)).json() as { version?: string }
  t.equal(health.version, build.version, `${name} runs ${build.label} ${build.version}`)
  return { name, ws: server.ws, http: server.http, server, build }
}

/**
 * A peer's view of the live instances: where the load balancer sends its
 * reconnects (any live instance but the one just lost), unless the test
 * steers its next reconnect to one instance.
 */
class Steered extends LiveSet {
  next: Endpoint | undefined
  constructor (private readonly shared: LiveSet) {
    super()
  }

  override pick (exclude?: string): Endpoint | undefined {
    const next = this.next
    this.next = undefined
    return next ?? this.shared.pick(exclude)
  }
}

/** What one run (the upgrade or the rollback) did besides streaming. */
interface Run {
  label: string
  live: LiveSet
  peers: ChurnPeer[]
  steer: Map<ChurnPeer, Steered>
  nodes: Map<string, Node>
  events: Array<{ label: string, at: number }>
  /** New pairs that met across versions, with the frames of their handshake. */
  handshakes: Array<{ across: string, frames: number }>
  moves: number
}

/** A client of the run (counted with it unless `counted` is false), disposed in teardown. */
function peer (t: Test, run: Run, name: string, counted = true): ChurnPeer {
  const steer = new Steered(run.live)
  const p = new ChurnPeer(name, { live: steer })
  run.steer.set(p, steer)
  if (counted) run.peers.push(p)
  t.teardown(() => p.dispose())
  return p
}

/**
 * Runs one step; a failure is reported with what was seen and the run goes
 * on, so that its count still shows what else went wrong.
 */
async function attempt (t: Test, what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn()
  } catch (err) {
    t.fail(`${what}: ${(err as Error).message}`)
  }
}

async function connected (p: ChurnPeer, node: Node): Promise<void> {
  if (!await p.connect(node)) throw new Error(`${p.name} could not connect to ${node.name}: ${JSON.stringify(Object.fromEntries(p.connectFailureReasons))}`)
}

/**
 * What a client closes with when it gives up on a connection and resumes
 * elsewhere (as ChurnPeer does after a ping timeout): not a clean close
 * (1000, 1001, 1005), so the server holds the session as it does for a
 * dropped one, and the partner hears nothing.
 */
const GIVE_UP = 4002

/**
 * Moves `p` to `target`: it gives up on its connection and resumes there
 * with its token, while its partner keeps streaming to it. It closes rather
 * than resets the TCP connection: a reset loses what is on the wire in that
 * socket, which no server can deliver (the contract promises delivery
 * through an instance's drain or crash, not through the client's own
 * socket); the close handshake lets both directions finish first.
 */
async function moveTo (run: Run, p: ChurnPeer, target: Node): Promise<void> {
  const from = p.server
  const resumes = p.resumes
  const steer = run.steer.get(p)
  if (steer === undefined || from === null || p.ws === null) throw new Error(`${p.name} cannot be moved (connected to ${from})`)
  steer.next = target
  p.ws.close(GIVE_UP, 'moving')
  run.moves++
  const moved = await until(() => p.resumes > resumes && p.server === target.name, 10_000, 20)
  if (!moved) throw new Error(`${p.name} did not resume on ${target.name} (from ${from}): connections ${JSON.stringify(p.conns)}, failed connects ${JSON.stringify(Object.fromEntries(p.connectFailureReasons))}, errors ${JSON.stringify(Object.fromEntries(p.errorCodes))}, identity changes ${p.identityChanges}`)
}

/** Waits until every peer is connected to a live instance and every sender's stream moved on by `n` messages. */
async function flowing (run: Run, n: number, why: string): Promise<void> {
  const from = new Map(run.peers.map(p => [p, p.seq]))
  const ok = await until(() => run.peers.every(p => p.server !== null && run.live.names().includes(p.server) && p.seq - (from.get(p) ?? 0) >= n), 15_000, 20)
  if (!ok) {
    const stuck = run.peers.filter(p => p.server === null || p.seq - (from.get(p) ?? 0) < n).map(p => `${p.name}@${p.server ?? '-'}:+${p.seq - (from.get(p) ?? 0)}`)
    throw new Error(`${run.label}: traffic did not flow ${why} (every sender +${n} within 15 s): ${stuck.join(' ')}`)
  }
}

/**
 * Pair i has one peer on instance i and the other on instance i + 1 (mod 3),
 * each pair in its own room; then they stream.
 */
async function streamingPairs (t: Test, run: Run, fleet: Node[]): Promise<void> {
  const at = (i: number): Node => fleet[i % fleet.length] as Node
  await Promise.all(Array.from({ length: PAIRS }, async (_, i) => {
    const roomId = `${run.label}-${i}`
    const a = peer(t, run, `${run.label}-p${i}a`)
    const b = peer(t, run, `${run.label}-p${i}b`)
    await createRoom(at(i), roomId)
    await Promise.all([connected(a, at(i)), connected(b, at(i + 1))])
    await a.join(roomId)
    const joined = await b.join(roomId)
    const ready = await a.next('ready')
    if (ready.data.peerId !== b.peerId || JSON.stringify(joined.data.peers) !== JSON.stringify([a.peerId])) {
      throw new Error(`${roomId}: pairing failed: ${JSON.stringify({ a: a.peerId, b: b.peerId, ready: ready.data, peers: joined.data.peers })}`)
    }
    a.partnerId = b.peerId
    b.partnerId = a.peerId
    a.partner = b
    b.partner = a
  }))
  for (const p of run.peers) p.startStreaming(TICK_MS)
}

const ANSWER = { type: 'answer', sdp: 'v=0\r\n' }

/**
 * A new pair meets across two instances of different versions: `first`
 * creates the room and joins on one, `second` joins on the other; then
 * ready → offer → answer → candidates, each checked as it arrives. The pair
 * then keeps streaming with the others (and is counted with them); a pair
 * that did not get through is closed and left out.
 */
async function newPairAcross (t: Test, run: Run, first: Node, second: Node, n: number): Promise<void> {
  const a = peer(t, run, `${run.label}-new${n}a`, false)
  const b = peer(t, run, `${run.label}-new${n}b`, false)
  try {
    await handshake(t, run, a, b, first, second, `${run.label}-new-${n}`)
  } catch (err) {
    a.dispose()
    b.dispose()
    throw err
  }
  run.peers.push(a, b)
}

async function handshake (t: Test, run: Run, a: ChurnPeer, b: ChurnPeer, first: Node, second: Node, roomId: string): Promise<void> {
  const across = `${first.name} (${first.build.label}) + ${second.name} (${second.build.label})`
  await createRoom(first, roomId)
  await Promise.all([connected(a, first), connected(b, second)])
  const first_ = await a.join(roomId)
  t.same(first_.data.peers, [], `${across}: the first joins an empty room`)
  const second_ = await b.join(roomId)
  t.same(second_.data.peers, [a.peerId], `${across}: the second sees the first in peers`)
  const ready = await a.next('ready')
  t.same(ready.data, { peerId: b.peerId }, `${across}: ready reaches the first`)
  a.send({ type: 'offer', data: { peerId: b.peerId, offer: OFFER }, id: 'offer-1' })
  const offer = await b.next('offer')
  t.same(offer.data, { offer: OFFER, peerId: a.peerId, from: a.peerId }, `${across}: the offer crosses versions`)
  b.send({ type: 'answer', data: { peerId: a.peerId, answer: ANSWER }, id: 'answer-1' })
  const answer = await a.next('answer')
  t.same(answer.data, { answer: ANSWER, peerId: b.peerId, from: b.peerId }, `${across}: the answer crosses back`)
  a.partnerId = b.peerId
  b.partnerId = a.peerId
  a.partner = b
  b.partner = a
  a.startStreaming(TICK_MS)
  b.startStreaming(TICK_MS)
  const candidates = await until(() => a.got.size >= 5 && b.got.size >= 5, 10_000, 20)
  if (!candidates) throw new Error(`${across}: candidates did not cross (got ${a.got.size} and ${b.got.size}); errors ${JSON.stringify([...a.inbox, ...b.inbox].filter(f => f.type === 'error'))}`)
  t.pass(`${across}: candidates cross both ways`)
  // Sent: 2 joins, offer, answer; received: 2 joinResponses, ready, offer, answer (checked above).
  run.handshakes.push({ across, frames: 9 })
}

/** A streaming peer (not one of the new pairs) connected to `node` right now. */
function someoneOn (run: Run, node: Node, except: ChurnPeer[] = []): ChurnPeer {
  const p = run.peers.find(p => p.server === node.name && !except.includes(p) && !p.name.includes('-new'))
  if (p === undefined) throw new Error(`${run.label}: nobody on ${node.name} to move`)
  return p
}

/**
 * Replaces `fleet` (three instances of one version) one at a time with
 * instances of `to`, under traffic; returns the new fleet and the run's count.
 */
async function rollingRun (t: Test, redis: TestRedis, label: string, fleet: Node[], to: Build): Promise<{ fleet: Node[], run: Run, tally: Tally }> {
  const run: Run = { label, live: new LiveSet(fleet), peers: [], steer: new Map(), nodes: new Map(fleet.map(n => [n.name, n])), events: [], handshakes: [], moves: 0 }
  await streamingPairs(t, run, fleet)
  await attempt(t, 'streaming', () => flowing(run, FLOW, 'at the start'))
  // Clients resume on another instance of the same fleet.
  for (const [i, node] of fleet.entries()) {
    await attempt(t, `a move from ${node.name}`, () => moveTo(run, someoneOn(run, node), fleet[(i + 1) % fleet.length] as Node))
  }
  await attempt(t, 'streaming', () => flowing(run, FLOW, 'after the first moves'))

  const replacements: Node[] = []
  let lastFaultAt = 0
  for (const [k, old] of fleet.entries()) {
    const next = await startNode(t, redis, to)
    replacements.push(next)
    run.nodes.set(next.name, next)
    run.live.add(next)
    run.events.push({ label: `start ${next.name}`, at: Date.now() })

    // Both versions run: a new pair meets across them (who joins first alternates) ...
    const other = fleet.slice(k + 1)[0] ?? old
    await attempt(t, `a new pair across ${other.name} and ${next.name}`, () => k % 2 === 0 ? newPairAcross(t, run, other, next, k) : newPairAcross(t, run, next, other, k))
    // ... and clients move across versions, both ways: two onto the new one, one of them back.
    await attempt(t, `moves between ${other.name}, ${old.name} and ${next.name}`, async () => {
      const mover = someoneOn(run, other)
      await moveTo(run, mover, next)
      await moveTo(run, someoneOn(run, old, [mover]), next)
      await moveTo(run, mover, other)
    })
    await attempt(t, 'streaming', () => flowing(run, FLOW, `with ${next.name} added`))

    // The load balancer stops sending connections to the old instance, then it drains.
    run.live.remove(old.name)
    lastFaultAt = Date.now()
    run.events.push({ label: `SIGTERM ${old.name}`, at: lastFaultAt })
    old.server.child.kill('SIGTERM')
    const exit = await bounded(old.server.exited, SETTINGS.SHUTDOWN_TIMEOUT_MS + 10_000, () => `${old.name} did not exit after SIGTERM; its output:\n${old.server.output()}`)
    t.equal(exit.code, 0, `${old.name} (${old.build.label}) drained and exited 0`)
    await attempt(t, 'streaming', () => flowing(run, FLOW, `after ${old.name} drained`))
  }

  for (const p of run.peers) p.stopStreaming()
  await settle(run.peers)
  // Long enough for a session lost on the way to be ended and its partner told.
  await sleep(Math.max(0, lastFaultAt + QUIET_MS - Date.now()))
  await settle(run.peers)
  return { fleet: replacements, run, tally: tally(run.peers) }
}

/** The run's count, printed, and what it must show. */
function verdict (t: Test, run: Run, r: Tally, from: Build, to: Build): void {
  // Resumes by the versions they crossed (previous → current and so on).
  const crossings = new Map<string, number>()
  for (const p of run.peers) {
    for (let i = 1; i < p.conns.length; i++) {
      const was = run.nodes.get(p.conns[i - 1]?.server ?? '')?.build.label
      const is = run.nodes.get(p.conns[i]?.server ?? '')?.build.label
      const key = `${was}→${is}`
      crossings.set(key, (crossings.get(key) ?? 0) + 1)
    }
  }
  const handshakeFrames = run.handshakes.reduce((n, h) => n + h.frames, 0)
  t.comment(summary(`${run.label} (${from.label} ${from.version} → ${to.label} ${to.version})`, r))
  t.comment(`${run.label}: ${run.peers.length} clients; ${run.moves} moves by the test, resumes by version ${[...crossings].map(([k, n]) => `${k} ${n}`).join(', ')}; ` +
    `${run.handshakes.length} new pairs across versions (${run.handshakes.map(h => h.across).join('; ')}), ${handshakeFrames} handshake frames (4 sent, 5 received per pair) besides the candidates; ${failureSummary(r)}`)
  if (r.lost.length > 0) t.comment(`lost: ${describeLost(r.lost, run.events)}`)

  t.equal(r.lost.length, 0, 'no accepted message lost')
  t.equal(r.duplicated, 0, 'no message delivered twice')
  t.equal(r.reordered, 0, 'no message overtook an earlier one from the same sender')
  t.same(Object.fromEntries(r.refused), {}, 'no message refused')
  t.same(Object.fromEntries(r.errors), {}, 'no error frame at all')
  t.equal(r.peerDisconnected, 0, 'no spurious peer-disconnected')
  t.equal(r.identityChanges, 0, 'every resume kept its peerId')
  t.equal(r.foreign + r.garbage + r.notWelcomeFirst, 0, 'no frame from a stranger, no malformed frame, welcome always first')
  t.equal(r.received, r.accepted, `every one of the ${r.accepted} accepted messages received`)
  const slow = run.peers.filter(p => p.seq < MIN_PER_SENDER).map(p => `${p.name}:${p.seq}`)
  t.same(slow, [], `every sender streamed at least ${MIN_PER_SENDER} messages`)
  t.same([...r.welcomedCloseCodes.keys()].filter(code => code !== 1001 && code !== GIVE_UP), [], `connections closed only by a drain (1001) or a client moving (${GIVE_UP})`)
  const closed = [...r.welcomedCloseCodes.values()].reduce((a, b) => a + b, 0)
  t.equal(r.resumes, closed, 'one resume, with the same peerId, for every connection that closed')
  t.ok(r.resumes >= PAIRS * 2, `${r.resumes} resumes: every client of the first fleet moved`)
  t.ok((crossings.get(`${from.label}→${to.label}`) ?? 0) > 0 && (crossings.get(`${to.label}→${from.label}`) ?? 0) > 0, 'clients resumed across versions both ways')
  t.equal(r.connectFailures, 0, 'no connection failed before its welcome')
  t.equal(run.handshakes.length, 3, 'a new pair met across versions at each step')
  const stranded = run.peers.filter(p => p.server === null || !run.live.names().includes(p.server)).map(p => p.name)
  t.same(stranded, [], 'every client ends up connected to a live instance')
}

t.test('rolling upgrade from the previous release and rollback: nothing lost, duplicated, reordered or refused', async (t) => {
  const built = await buildPreviousRelease({ log: line => t.comment(line) })
  t.comment(`previous release ${built.version} (${built.commit}) ${built.cached ? 'found cached' : 'built'} in ${built.ms} ms: ${built.server}`)
  const previous: Build = { label: 'previous', version: built.version, script: built.server }
  const current: Build = { label: 'current', version: (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version, script: 'dist/server.js' }

  const redis = await startRedis(t, { own: true })
  const first = await Promise.all([0, 1, 2].map(() => startNode(t, redis, previous)))

  const up = await rollingRun(t, redis, 'upgrade', first, current)
  verdict(t, up.run, up.tally, previous, current)
  for (const p of up.run.peers) p.dispose()

  const down = await rollingRun(t, redis, 'rollback', up.fleet, previous)
  verdict(t, down.run, down.tally, current, previous)
  for (const p of down.run.peers) p.dispose()
})
