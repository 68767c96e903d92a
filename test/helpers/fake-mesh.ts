import type { Test } from 'tap'
import type { LogFn } from 'pino'
import { createMemoryStore } from '../../src/store/memory'
import { StoreUnavailableError, type JoinResult, type Member, type Store } from '../../src/store/types'
import { createLocalMesh, type ClaimedSession, type EndedSession, type Handover, type Mesh, type MeshEvents, type SessionRecord } from '../../src/signaling/mesh'
import type { BusMessage } from '../../src/signaling/bus'
import { decodeBus, encodeBus } from '../../src/cluster/codec'
import { createSignalingHub, type SignalingHub } from '../../src/signaling/hub'
import type { Clock, ConnectionHandle, HubLimits, Logger, SignalingMetrics, TimerHandle, Transport } from '../../src/signaling/types'

/*
 * In-process fakes of the signaling core's ports, for unit tests of
 * src/signaling without sockets, Redis or real time:
 *
 *   FakeClock      one timeline for every node; time moves only in advance()
 *   FakeTransport  records what the hub writes (parsed), how it closed the socket
 *   FakeCluster    N nodes sharing one registry (rooms, members with their
 *                  node, sessions, parked handovers) with the semantics of the
 *                  Redis scripts in src/redis/keys.ts, and a bus that carries
 *                  messages per (sender, receiver) link in order, like Redis
 *                  pub/sub, through the real codec. Links can be held,
 *                  released and delivered out of turn to force races; nodes
 *                  can crash (messages to them are lost, send() answers false,
 *                  their timers and registry calls never run again).
 *                  Each node heart-beats on its clock as liveness.ts does: a
 *                  gap of deadAfterMs makes it reapable, a survivor ends the
 *                  sessions of a node that left with sessions after the
 *                  grace, and a registry that lost its data is noticed at the
 *                  next beat and believed again after `restore`. What it
 *                  shares with the Redis scripts is pinned by the Mesh
 *                  contract suite (test/mesh-contract.test.ts).
 *
 * Each node gets a real hub from createSignalingHub.
 */

// --- logging and metrics -------------------------------------------------------

const noop = (() => {}) as unknown as LogFn

export function silentLogger (): Logger {
  const log: Logger = { child: () => log, debug: noop, info: noop, warn: noop, error: noop }
  return log
}

/** Counts every metric call; `count('error', 'peer_not_found')`. */
export class FakeMetrics implements SignalingMetrics {
  readonly counts = new Map<string, number>()
  private bump (key: string): void { this.counts.set(key, (this.counts.get(key) ?? 0) + 1) }
  count (name: string, label?: string): number { return this.counts.get(label === undefined ? name : `${name}:${label}`) ?? 0 }
  messageIn (type: string): void { this.bump(`in:${type}`) }
  messageOut (type: string): void { this.bump(`out:${type}`) }
  error (code: string): void { this.bump(`error:${code}`) }
  relayLatency (): void { this.bump('relayLatency') }
  resume (): void { this.bump('resume') }
  duplicate (): void { this.bump('duplicate') }
  rerouted (): void { this.bump('rerouted') }
  closed (reason: string): void { this.bump(`closed:${reason}`) }
  moved (direction: string): void { this.bump(`moved:${direction}`) }
}

// --- clock ------------------------------------------------------------------------

interface FakeTimer { at: number, seq: number, fn: () => void, owner: string, cancelled: boolean }

export class FakeClock {
  private t = 1_700_000_000_000
  private seq = 0
  private readonly timers = new Set<FakeTimer>()
  private readonly frozen = new Set<string>()

  now (): number { return this.t }

  /** The Clock port of one node: its timers can be frozen when the node crashes. */
  forNode (owner: string): Clock {
    return {
      now: () => this.t,
      setTimeout: (fn, ms) => {
        const timer: FakeTimer = { at: this.t + Math.max(0, ms), seq: ++this.seq, fn, owner, cancelled: this.frozen.has(owner) }
        if (!timer.cancelled) this.timers.add(timer)
        return timer as unknown as TimerHandle
      },
      clearTimeout: (handle) => {
        const timer = handle as unknown as FakeTimer
        timer.cancelled = true
        this.timers.delete(timer)
      }
    }
  }

  /** A crashed node's timers never fire. */
  freeze (owner: string): void {
    this.frozen.add(owner)
    for (const timer of this.timers) if (timer.owner === owner) this.timers.delete(timer)
  }

  pending (owner?: string): number {
    let n = 0
    for (const timer of this.timers) if (owner === undefined || timer.owner === owner) n++
    return n
  }

  /** The earliest timer due at or before `until`, taken off the list, with the clock moved to it. */
  takeDue (until: number): FakeTimer | null {
    let next: FakeTimer | null = null
    for (const timer of this.timers) {
      if (timer.at > until) continue
      if (next === null || timer.at < next.at || (timer.at === next.at && timer.seq < next.seq)) next = timer
    }
    if (next === null) return null
    this.timers.delete(next)
    this.t = Math.max(this.t, next.at)
    return next
  }

  set (t: number): void { this.t = Math.max(this.t, t) }
}

// --- transport and clients -----------------------------------------------------

export interface Frame { type: string, data: any, id?: string }

export class FakeTransport implements Transport {
  /** Frames the client received, in order. */
  readonly received: Frame[] = []
  /** Frames written after the socket closed (a correct hub writes none). */
  readonly lost: Frame[] = []
  readyState = 1
  bufferedAmount = 0
  pings = 0
  /** Throw on the next n sends (a socket failing under the hub). */
  failSends = 0
  /** How the server ended the socket: a close code, or 'terminated'. */
  serverClose: { code: number, reason: string } | 'terminated' | null = null
  handle: ConnectionHandle | null = null
  /** When false, the socket stays closing after a server close until the test completes it. */
  autoComplete = true
  private completed = false

  send (data: string): void {
    if (this.failSends > 0) {
      this.failSends--
      throw new Error('socket write failed')
    }
    const parsed = JSON.parse(data) as Frame
    if (this.readyState !== 1) this.lost.push(parsed)
    else this.received.push(parsed)
  }

  close (code: number, reason: string): void {
    if (this.serverClose === null) this.serverClose = { code, reason }
    if (this.readyState === 1) this.readyState = 2
    if (this.autoComplete) setImmediate(() => this.complete(code))
  }

  terminate (): void {
    if (this.serverClose === null) this.serverClose = 'terminated'
    this.readyState = 3
    setImmediate(() => this.complete(1006))
  }

  ping (): void { this.pings++ }

  /** The socket is closed for good: the hub hears `closed(code)` once. */
  complete (code: number): void {
    if (this.completed) return
    this.completed = true
    this.readyState = 3
    this.handle?.closed(code)
  }

  /** The process holding this socket died: nothing reaches the hub any more. */
  sever (): void {
    this.completed = true
    this.readyState = 3
  }
}

export class FakeClient {
  constructor (readonly node: TestNode, readonly transport: FakeTransport, readonly handle: ConnectionHandle) {}

  get inbox (): Frame[] { return this.transport.received }
  /** Frames of one type, or every frame. */
  frames (type?: string): Frame[] { return type === undefined ? [...this.inbox] : this.inbox.filter(f => f.type === type) }
  /** The types received, in order (compact for assertions). */
  types (): string[] { return this.inbox.map(f => f.type) }
  get welcome (): Frame | undefined { return this.frames('welcome').at(-1) }
  get peerId (): string { return this.welcome?.data.peerId }
  get token (): string { return this.welcome?.data.resumeToken }
  get closed (): boolean { return this.transport.readyState === 3 }

  send (type: string, data?: unknown, id?: string): void {
    this.handle.message(JSON.stringify(id === undefined ? { type, data } : { type, data, id }), false)
  }

  raw (data: string | Buffer, isBinary = false): void {
    this.handle.message(data, isBinary)
  }

  /** The connection is lost without a close frame (1006): the session is held. */
  drop (): void {
    this.transport.readyState = 3
    this.transport.complete(1006)
  }

  /** A clean close by the client (1000 by default): the session ends. */
  close (code = 1000): void {
    this.transport.readyState = 3
    this.transport.complete(code)
  }

  /** Frames since a mark (see `mark()`). */
  since (mark: number, type?: string): Frame[] {
    return this.inbox.slice(mark).filter(f => type === undefined || f.type === type)
  }

  mark (): number { return this.inbox.length }
}

// --- the shared registry and bus ------------------------------------------------

interface SessionEntry { secret: string, room: string, node: string, epoch: number }

type Op = 'createRoom' | 'joinRoom' | 'leaveRoom' | 'readSession' | 'claimSession' | 'rotateSecret' | 'endSession' | 'ownerOf' | 'ownersOf' | 'park' | 'restore' | 'othersAlive'
type Hook = { when: 'before' | 'after', fn: () => unknown }

interface Link { from: string, to: string, queue: string[], held: boolean, delivered: string[] }

export const DEFAULT_LIMITS: HubLimits = {
  maxPeers: 8,
  joinRateLimit: false,
  ratePerS: 1000,
  rateBurst: 1000,
  abuseMaxDrops: 50,
  maxBufferedBytes: 1 << 20,
  heartbeatMs: 25_000,
  resumeGraceMs: 10_000,
  resumeBufferMax: 50,
  resumeBufferBytes: 1 << 24,
  maxQueued: 1000,
  rerouteDeadlineMs: 30_000,
  stallCheckMs: 0,
  evictAfterMs: 0
}

/** A node as the shared registry and bus see it. */
export interface NodeState {
  readonly name: string
  /** Crashed: messages to it are lost and its code never runs again. */
  dead: boolean
  stopped: boolean
  left: boolean
  /** All of its registry calls reject (Redis unreachable from this node). */
  unreachable: boolean
  /** Its publishes are applied at once but answered only on `releaseAnswers` (a slow round trip). */
  answersHeld: Array<() => void> | null
  events: MeshEvents | null
  /** Liveness: when it last beat, and the longest gap between beats since the last ownersOf. */
  lastBeat: number
  longestSilence: number
  /** Left with sessions behind: a survivor ends them after the grace. */
  abandoned: boolean
  /** The registry lost its data and this node has not restored yet; `noticed` once it heard. */
  lostRegistry: { noticed: boolean } | null
}

/** A node with a real hub on the fake ports. */
export interface TestNode extends NodeState {
  readonly hub: SignalingHub
  readonly store: Store
  readonly mesh: Mesh
  readonly metrics: FakeMetrics
  readonly clients: FakeClient[]
}

export interface ClusterOptions {
  limits?: Partial<HubLimits>
  /** One node on createLocalMesh + createMemoryStore (no registry, no bus). */
  local?: boolean
  /** INSTANCE_DEAD_AFTER_MS of the fake's liveness. */
  deadAfterMs?: number
}

const never = <T>(): Promise<T> => new Promise<T>(() => {})

export class FakeCluster {
  readonly clock = new FakeClock()
  readonly limits: HubLimits
  readonly nodes = new Map<string, TestNode>()
  /** Every node, with a hub or bare (`bare`). */
  private readonly states = new Map<string, NodeState>()
  /** roomId → peerId → node. */
  readonly rooms = new Map<string, Map<string, string>>()
  readonly bindings = new Map<string, string>()
  readonly sessions = new Map<string, SessionEntry>()
  readonly parked = new Map<string, string[]>()
  private readonly links = new Map<string, Link>()
  private readonly hooks = new Map<string, Hook[]>()
  private pumpScheduled = false
  /** Rate limits and referrers (not what these tests are about). */
  private readonly misc: Store
  private readonly local: boolean
  private readonly deadAfterMs: number

  constructor (opts: ClusterOptions = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits }
    this.local = opts.local === true
    this.deadAfterMs = opts.deadAfterMs ?? 15_000
    this.misc = createMemoryStore({ instanceId: 'misc', roomTtlS: 86400, roomEmptyTtlS: 900, joinLimitMax: 2, joinLimitWindowMs: 60_000, trackMaxRefsPerDay: 1000, now: () => this.clock.now() })
  }

  // --- nodes ---

  node (name: string): TestNode {
    if (this.states.has(name)) throw new Error(`node ${name} exists`)
    const metrics = new FakeMetrics()
    let store: Store
    let mesh: Mesh
    if (this.local) {
      store = createMemoryStore({ instanceId: name, roomTtlS: 86400, roomEmptyTtlS: 900, joinLimitMax: 2, joinLimitWindowMs: 60_000, trackMaxRefsPerDay: 1000, now: () => this.clock.now() })
      mesh = createLocalMesh(store, name)
    } else {
      store = this.storeFor(name)
      mesh = this.meshFor(name, store)
    }
    const hub = createSignalingHub({
      store,
      mesh,
      clock: this.clock.forNode(name),
      log: silentLogger(),
      limits: this.limits,
      iceServers: () => [],
      metrics
    })
    // As the signaling plugin does: the stall watchdog runs on the node's clock (a no-op with stallCheckMs 0).
    hub.startWatchdog()
    const node: TestNode = { ...this.fresh(name), hub, store, mesh, metrics, clients: [] }
    this.nodes.set(name, node)
    this.states.set(name, node)
    mesh.start({
      message: (msg) => hub.onBus(msg),
      sessionsEnded: (ended) => hub.peersGone(ended),
      registryLost: () => hub.registryLost()
    }).catch(() => {})
    return node
  }

  /**
   * A node without a hub: its Store and Mesh ports alone, on the shared
   * registry and bus (the Mesh contract suite drives them). Its mesh's
   * events go wherever `mesh.start` is told.
   */
  bare (name: string): { store: Store, mesh: Mesh } {
    if (this.local) throw new Error('a local cluster has no shared registry')
    if (this.states.has(name)) throw new Error(`node ${name} exists`)
    this.states.set(name, this.fresh(name))
    const store = this.storeFor(name)
    return { store, mesh: this.meshFor(name, store) }
  }

  private fresh (name: string): NodeState {
    return { name, dead: false, stopped: false, left: false, unreachable: false, answersHeld: null, events: null, lastBeat: this.clock.now(), longestSilence: 0, abandoned: false, lostRegistry: null }
  }

  private state (name: string): NodeState {
    const node = this.states.get(name)
    if (node === undefined) throw new Error(`no node ${name}`)
    return node
  }

  get (name: string): TestNode {
    const node = this.nodes.get(name)
    if (node === undefined) throw new Error(`no node ${name}`)
    return node
  }

  /** Opens a connection on a node, as the /ws route would after an upgrade. */
  connect (node: TestNode | string, ctx: { resumeToken?: string, ip?: string } = {}): FakeClient {
    const n = typeof node === 'string' ? this.get(node) : node
    const transport = new FakeTransport()
    const handle = n.hub.open(transport, { ip: ctx.ip ?? '192.0.2.1', resumeToken: ctx.resumeToken })
    transport.handle = handle
    const client = new FakeClient(n, transport, handle)
    n.clients.push(client)
    return client
  }

  /** The process dies (SIGKILL): its sockets are gone, messages to it are lost, its code never runs again. */
  crash (name: string): void {
    const node = this.get(name)
    node.dead = true
    this.clock.freeze(name)
    for (const client of node.clients) client.transport.sever()
    for (const link of this.links.values()) if (link.to === name) link.queue.length = 0
  }

  /**
   * What a survivor's liveness does after the grace (src/cluster/liveness.ts):
   * ends every session the dead node still owns and tells `by`'s hub.
   */
  reap (dead: string, by: string): EndedSession[] {
    // Only a node silent for deadAfterMs is reaped: it learns so at its next ownership check.
    this.state(dead).longestSilence = Infinity
    const ended: EndedSession[] = []
    for (const [peerId, entry] of [...this.sessions]) {
      if (entry.node !== dead) continue
      const result = this.endEntry(peerId, dead)
      if (result !== null && result.roomId !== '') ended.push(result)
    }
    if (ended.length > 0) this.state(by).events?.sessionsEnded(ended)
    return ended
  }

  /** Redis loses every key. */
  loseData (): void {
    this.rooms.clear()
    this.bindings.clear()
    this.sessions.clear()
    this.parked.clear()
    for (const node of this.states.values()) node.lostRegistry = { noticed: false }
  }

  // --- liveness (src/cluster/liveness.ts) ---

  /** Heart-beats on the node's clock every deadAfterMs/3 until it leaves (or crashes: its timers freeze). */
  private startBeating (name: string): void {
    const clock = this.clock.forNode(name)
    const everyMs = Math.max(100, Math.floor(this.deadAfterMs / 3))
    const tick = (): void => {
      const node = this.state(name)
      if (node.left) return
      clock.setTimeout(tick, everyMs)
      this.beat(node)
    }
    this.beat(this.state(name))
    clock.setTimeout(tick, everyMs)
  }

  private beat (node: NodeState): void {
    const now = this.clock.now()
    node.longestSilence = Math.max(node.longestSilence, now - node.lastBeat)
    node.lastBeat = now
    if (node.unreachable) return
    this.noticeLoss(node)
    // A node that left with sessions: the first survivor to beat takes it (the reap lock) and ends them after the grace.
    for (const other of this.states.values()) {
      if (!other.abandoned) continue
      other.abandoned = false
      this.clock.forNode(node.name).setTimeout(() => { this.reap(other.name, node.name) }, this.limits.resumeGraceMs)
    }
  }

  /** A lost registry is reported once, by the first read that sees it. */
  private noticeLoss (node: NodeState): void {
    if (node.lostRegistry === null || node.lostRegistry.noticed) return
    node.lostRegistry.noticed = true
    node.events?.registryLost()
  }

  createRoom (roomId: string): void {
    if (this.local) throw new Error('use node.store.createRoom on a local node')
    if (!this.rooms.has(roomId)) this.rooms.set(roomId, new Map())
  }

  /** Members of a room in the registry, with their nodes. */
  members (roomId: string): Member[] {
    return [...this.rooms.get(roomId) ?? []].map(([peerId, instance]) => ({ peerId, instance }))
  }

  // --- fault injection ---

  /**
   * Runs `fn` once, before (or after) the next `op` on `node` applies. A
   * `before` hook that throws fails the call without applying it; an `after`
   * hook that throws fails it after it applied (the caller cannot tell).
   * A hook may also await something the test releases later.
   */
  intercept (node: string, op: Op, fn: () => unknown, when: 'before' | 'after' = 'before'): void {
    const key = `${node}:${op}`
    const list = this.hooks.get(key) ?? []
    list.push({ when, fn })
    this.hooks.set(key, list)
  }

  private async run<T> (node: string, op: Op, apply: () => T): Promise<T> {
    const n = this.state(node)
    if (n.dead) return never()
    if (n.unreachable) throw new StoreUnavailableError()
    const key = `${node}:${op}`
    const list = this.hooks.get(key) ?? []
    const before = list.findIndex(h => h.when === 'before')
    if (before >= 0) {
      const [hook] = list.splice(before, 1)
      await hook?.fn()
    }
    if (n.dead) return never()
    const result = apply()
    const after = list.findIndex(h => h.when === 'after')
    if (after >= 0) {
      const [hook] = list.splice(after, 1)
      await hook?.fn()
    }
    return result
  }

  /** Publishes from `name` are answered late, until `releaseAnswers`. */
  holdAnswers (name: string): void { this.state(name).answersHeld ??= [] }

  releaseAnswers (name: string): void {
    const node = this.state(name)
    const held = node.answersHeld ?? []
    node.answersHeld = null
    for (const answer of held) answer()
  }

  // --- bus ---

  private link (from: string, to: string): Link {
    const key = `${from}>${to}`
    let link = this.links.get(key)
    if (link === undefined) {
      link = { from, to, queue: [], held: false, delivered: [] }
      this.links.set(key, link)
    }
    return link
  }

  /** Stops delivering on a link (messages queue up) until `release`. */
  hold (from: string, to: string): void { this.link(from, to).held = true }

  release (from: string, to: string): void {
    this.link(from, to).held = false
    this.schedulePump()
  }

  /** Messages waiting on a link, decoded. */
  queued (from: string, to: string): BusMessage[] {
    return this.link(from, to).queue.map(p => decodeBus(p) as BusMessage)
  }

  /** Delivers one message of a (held) link out of turn: the first matching `match`. */
  deliverOne (from: string, to: string, match: (msg: BusMessage) => boolean = () => true): BusMessage {
    const link = this.link(from, to)
    const i = link.queue.findIndex(p => match(decodeBus(p) as BusMessage))
    if (i < 0) throw new Error(`no matching message on ${from}>${to}`)
    const [payload] = link.queue.splice(i, 1)
    return this.dispatch(link, payload as string)
  }

  /** Delivers again the last message of a link that matches (a frame reaching a node by a second path). */
  replay (from: string, to: string, match: (msg: BusMessage) => boolean = () => true): BusMessage {
    const link = this.link(from, to)
    const payload = [...link.delivered].reverse().find(p => match(decodeBus(p) as BusMessage))
    if (payload === undefined) throw new Error(`nothing delivered on ${from}>${to} matches`)
    return this.dispatch(link, payload)
  }

  /** Loses the messages waiting on a link that match (what a killed process had taken but not acted on). */
  lose (from: string, to: string, match: (msg: BusMessage) => boolean = () => true): BusMessage[] {
    const link = this.link(from, to)
    const lost: BusMessage[] = []
    for (let i = link.queue.length - 1; i >= 0; i--) {
      const msg = decodeBus(link.queue[i] as string) as BusMessage
      if (match(msg)) {
        link.queue.splice(i, 1)
        lost.unshift(msg)
      }
    }
    return lost
  }

  private dispatch (link: Link, payload: string): BusMessage {
    const msg = decodeBus(payload)
    if (msg === null) throw new Error(`undecodable bus payload: ${payload}`)
    link.delivered.push(payload)
    this.state(link.to).events?.message(msg)
    return msg
  }

  private deliverable (): boolean {
    for (const link of this.links.values()) if (!link.held && link.queue.length > 0) return true
    return false
  }

  private schedulePump (): void {
    if (this.pumpScheduled) return
    this.pumpScheduled = true
    setImmediate(() => {
      this.pumpScheduled = false
      // One message per link per round: what each delivery sets off runs before the next.
      for (const link of [...this.links.values()]) {
        if (link.held || link.queue.length === 0) continue
        const target = this.states.get(link.to)
        if (target === undefined || target.dead) {
          link.queue.length = 0
          continue
        }
        this.dispatch(link, link.queue.shift() as string)
      }
      if (this.deliverable()) this.schedulePump()
    })
  }

  private subscribed (name: string): boolean {
    const node = this.states.get(name)
    return node !== undefined && !node.dead && !node.stopped
  }

  // --- time ---

  /** Runs queued bus messages and pending promise callbacks until nothing moves. */
  async settle (): Promise<void> {
    let quiet = 0
    for (let i = 0; i < 100_000; i++) {
      await new Promise(resolve => setImmediate(resolve))
      if (this.pumpScheduled || this.deliverable()) {
        quiet = 0
        continue
      }
      if (++quiet >= 3) return
    }
    throw new Error('the cluster never settled')
  }

  /** Moves the shared clock forward, firing due timers in order (settling after each). */
  async advance (ms: number): Promise<void> {
    const until = this.clock.now() + ms
    await this.settle()
    for (;;) {
      const timer = this.clock.takeDue(until)
      if (timer === null) break
      timer.fn()
      await this.settle()
    }
    this.clock.set(until)
    await this.settle()
  }

  async close (): Promise<void> {
    await this.misc.close()
    for (const node of this.nodes.values()) if (this.local) await node.store.close()
  }

  // --- the registry, as each node's Store and Mesh see it ---

  private endEntry (peerId: string, owner: string): EndedSession | null {
    const entry = this.sessions.get(peerId)
    if (entry === undefined || entry.node !== owner) return null
    this.sessions.delete(peerId)
    this.parked.delete(peerId)
    if (entry.room === '') return { peerId, roomId: '', remaining: [] }
    if (this.bindings.get(peerId) === entry.room) this.bindings.delete(peerId)
    this.rooms.get(entry.room)?.delete(peerId)
    return { peerId, roomId: entry.room, remaining: this.members(entry.room) }
  }

  private storeFor (name: string): Store {
    const misc = this.misc
    return {
      kind: 'redis',
      createRoom: (roomId) => this.run(name, 'createRoom', () => {
        if (this.rooms.has(roomId)) return false
        this.rooms.set(roomId, new Map())
        return true
      }),
      roomExists: async (roomId) => this.rooms.has(roomId),
      joinRoom: (roomId, peerId, maxPeers, secretHash) => this.run(name, 'joinRoom', (): JoinResult => {
        const room = this.rooms.get(roomId)
        if (room === undefined) return { ok: false, code: 'room_not_found' }
        if (!room.has(peerId) && room.size >= maxPeers) return { ok: false, code: 'room_full' }
        room.set(peerId, name)
        this.bindings.set(peerId, roomId)
        if (secretHash !== undefined && secretHash !== '') {
          // Like JOIN_ROOM: secret, room and instance are written; the epoch stays.
          const entry = this.sessions.get(peerId)
          if (entry === undefined) this.sessions.set(peerId, { secret: secretHash, room: roomId, node: name, epoch: 0 })
          else Object.assign(entry, { secret: secretHash, room: roomId, node: name })
        }
        return { ok: true, members: this.members(roomId) }
      }),
      leaveRoom: (roomId, peerId) => this.run(name, 'leaveRoom', () => {
        if (this.bindings.get(peerId) === roomId) this.bindings.delete(peerId)
        const entry = this.sessions.get(peerId)
        if (entry !== undefined && entry.room === roomId) entry.room = ''
        return this.rooms.get(roomId)?.delete(peerId) ?? false
      }),
      roomMembers: async (roomId) => [...this.rooms.get(roomId)?.keys() ?? []],
      peerRoom: async (peerId) => this.bindings.get(peerId) ?? null,
      touchRooms: async () => {},
      hitJoinRateLimit: (ip) => misc.hitJoinRateLimit(ip),
      incrementReferrer: (day, ref) => misc.incrementReferrer(day, ref),
      referrerCounts: (day) => misc.referrerCounts(day),
      ping: async () => {},
      close: async () => {}
    }
  }

  private meshFor (name: string, rooms: Pick<Store, 'joinRoom' | 'leaveRoom'>): Mesh {
    const cluster = this
    const node = (): NodeState => this.state(name)
    return {
      node: name,
      // The membership and the session record in one step, as the store's join writes them (JOIN_ROOM).
      joinRoom: (roomId, peerId, maxPeers, secretHash) => rooms.joinRoom(roomId, peerId, maxPeers, secretHash),
      leaveRoom: (roomId, peerId) => rooms.leaveRoom(roomId, peerId),
      get reachable () { return !cluster.state(name).unreachable },
      start: async (events) => {
        node().events = events
        this.startBeating(name)
      },
      send: (to, msg) => {
        const n = node()
        if (n.dead) return never()
        if (n.unreachable) return Promise.reject(new StoreUnavailableError())
        // Published now (in call order), answered with whether anyone subscribed.
        const received = this.subscribed(to)
        if (received) {
          this.link(name, to).queue.push(encodeBus(msg))
          this.schedulePump()
        }
        const held = n.answersHeld
        if (held === null) return Promise.resolve(received)
        return new Promise<boolean>(resolve => held.push(() => resolve(received)))
      },
      readSession: (peerId) => this.run(name, 'readSession', (): SessionRecord | null => {
        const entry = this.sessions.get(peerId)
        return entry === undefined ? null : { secret: entry.secret, room: entry.room, node: entry.node }
      }),
      claimSession: (peerId, expectedHash, newHash) => this.run(name, 'claimSession', (): ClaimedSession | null => {
        const entry = this.sessions.get(peerId)
        if (entry === undefined || entry.secret !== expectedHash) return null
        const previous = entry.node
        entry.epoch++
        entry.secret = newHash
        entry.node = name
        const parked = this.parked.get(peerId) ?? []
        this.parked.delete(peerId)
        let room = entry.room
        let members: Member[] = []
        if (room !== '') {
          const peers = this.rooms.get(room)
          if (peers?.has(peerId) === true) {
            peers.set(peerId, name)
            members = this.members(room)
          } else {
            room = ''
          }
        }
        let handover: Handover | null = null
        for (const json of parked) {
          const h = JSON.parse(json) as Handover
          handover ??= { baseline: [], held: [] }
          handover.baseline.push(...h.baseline)
          handover.held.push(...h.held)
        }
        return { previous, roomId: room === '' ? null : room, members, epoch: entry.epoch, parked: handover }
      }),
      rotateSecret: (peerId, newHash) => this.run(name, 'rotateSecret', () => {
        const entry = this.sessions.get(peerId)
        if (entry !== undefined) entry.secret = newHash
      }),
      endSession: (peerId, owner = name) => this.run(name, 'endSession', () => this.endEntry(peerId, owner)),
      ownerOf: (peerId) => this.run(name, 'ownerOf', () => this.sessions.get(peerId)?.node ?? null),
      ownersOf: (peerIds) => this.run(name, 'ownersOf', () => {
        const n = node()
        if (n.lostRegistry !== null) {
          this.noticeLoss(n)
          return null
        }
        // Reapable: silent for deadAfterMs since the last check (or reaped by the fake's reap()).
        const silence = Math.max(n.longestSilence, this.clock.now() - n.lastBeat)
        n.longestSilence = 0
        return { owners: new Map(peerIds.map(peerId => [peerId, this.sessions.get(peerId)?.node ?? null])), reapable: silence >= this.deadAfterMs }
      }),
      park: (peerId, owner, handover) => this.run(name, 'park', () => {
        const entry = this.sessions.get(peerId)
        if (entry === undefined) return null
        if (entry.node === owner) {
          const list = this.parked.get(peerId) ?? []
          list.push(JSON.stringify(handover))
          this.parked.set(peerId, list)
        }
        return entry.node
      }),
      othersAlive: () => this.run(name, 'othersAlive', () => {
        for (const other of this.states.values()) if (other.name !== name && !other.dead && !other.left) return true
        return false
      }),
      // Like RESTORE_SESSION and RESTORE_MEMBER: a session another node owns by now is left alone.
      restore: (entries) => this.run(name, 'restore', () => {
        for (const e of entries) {
          const entry = this.sessions.get(e.peerId)
          if (entry !== undefined && entry.node !== name) continue
          this.sessions.set(e.peerId, { secret: e.secret, room: e.roomId ?? '', node: name, epoch: Math.max(e.epoch, entry?.epoch ?? 0) })
          if (e.roomId === null) continue
          this.bindings.set(e.peerId, e.roomId)
          const room = this.rooms.get(e.roomId) ?? new Map<string, string>()
          room.set(e.peerId, name)
          this.rooms.set(e.roomId, room)
        }
        node().lostRegistry = null
      }),
      get liveNodes () {
        return [...cluster.states.values()].filter(other => !other.dead && !other.left).map(other => other.name)
      },
      get othersSeen () {
        for (const other of cluster.states.values()) if (other.name !== name && !other.dead && !other.left) return true
        return false
      },
      stop: async () => {
        // Like an UNSUBSCRIBE: what was published to this node before it arrives first.
        const n = node()
        for (const link of this.links.values()) {
          if (link.to !== name) continue
          while (link.queue.length > 0) this.dispatch(link, link.queue.shift() as string)
        }
        n.stopped = true
      },
      leave: async (left) => {
        const n = node()
        n.left = true
        n.abandoned = left.length > 0
      }
    }
  }
}

// --- assertions shared by the core tests -------------------------------------------

export const offer = (n: number | string) => ({ type: 'offer', sdp: `v=0 #${n}` })

/** Joins and checks the reply; resolves with the peers it listed. */
export async function join (t: Test, c: FakeCluster, client: FakeClient, roomId: string): Promise<string[]> {
  const mark = client.mark()
  client.send('join', { roomId }, 'j')
  await c.settle()
  const reply = client.since(mark, 'joinResponse')[0]
  t.equal(reply?.data.success, true, `joined ${roomId}`)
  return reply?.data.peers ?? []
}

/** The numbers of the offers (see `offer`) a client received, from one sender or any. */
export function offerNumbers (to: FakeClient, from?: FakeClient): number[] {
  return to.frames('offer')
    .filter(f => from === undefined || f.data.from === from.peerId)
    .map(f => Number(/#(\d+)/.exec(f.data.offer.sdp)?.[1]))
}

export function errorsOf (client: FakeClient, code: string): Frame[] {
  return client.frames('error').filter(f => f.data.code === code)
}

/** Sends offers numbered `from..to` (ids `o<n>`). */
export function sendOffers (sender: FakeClient, target: FakeClient | string, from: number, to: number): void {
  const peerId = typeof target === 'string' ? target : target.peerId
  for (let i = from; i <= to; i++) sender.send('offer', { peerId, offer: offer(i) }, `o${i}`)
}

export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** A fake cluster of named nodes, closed in teardown. */
export async function cluster (t: Test, names: string[], opts: ClusterOptions = {}): Promise<FakeCluster> {
  const c = new FakeCluster(opts)
  t.teardown(() => c.close())
  for (const name of names) c.node(name)
  return c
}

/** a on n1 and b on n2, both in room r; more nodes idle. */
export async function pair (t: Test, names = ['n1', 'n2', 'n3'], opts: ClusterOptions = {}): Promise<{ c: FakeCluster, a: FakeClient, b: FakeClient }> {
  const c = await cluster(t, names, opts)
  c.createRoom('r')
  const a = c.connect('n1')
  const b = c.connect('n2')
  await join(t, c, a, 'r')
  await join(t, c, b, 'r')
  return { c, a, b }
}

/** What a store or mesh call does when Redis does not answer. */
export const boom = (): never => { throw new Error('redis: command timed out') }
