import WebSocket from 'ws'
import { until } from '../helper'

/*
 * Clients for the churn tests (test/churn.test.ts): each behaves like the
 * shipped client (src/client) on a connection loss — wait, reconnect with
 * ?resume= to another live instance, send only after `welcome` — and keeps
 * exact books of what it wrote and what reached it, so a run can count lost,
 * duplicated and reordered messages per directed pair.
 */

export interface Frame { type: string, data: any, id?: string }

/** One server instance as the clients see it. */
export interface Endpoint { name: string, ws: string }

/** The instances clients may (re)connect to; the test edits it as instances come and go. */
export class LiveSet {
  private list: Endpoint[] = []

  constructor (endpoints: Endpoint[] = []) {
    for (const e of endpoints) this.add(e)
  }

  add (endpoint: Endpoint): void {
    this.list.push(endpoint)
  }

  remove (name: string): void {
    this.list = this.list.filter(e => e.name !== name)
  }

  names (): string[] {
    return this.list.map(e => e.name)
  }

  /** A random live endpoint other than `exclude` (any live one when it is the only one left). */
  pick (exclude?: string): Endpoint | undefined {
    const others = this.list.filter(e => e.name !== exclude)
    const from = others.length > 0 ? others : this.list
    return from[Math.floor(Math.random() * from.length)]
  }
}

/** One connection that got its `welcome`: where, and when the client saw it open and close. */
export interface ConnRecord {
  server: string
  openedAt: number
  closedAt: number | null
  code: number | null
  resumed: boolean
}

export interface PeerOptions {
  /** Where reconnects go (a random live instance other than the one just lost). Absent: no automatic reconnect. */
  live?: LiveSet
  /** Delay before a reconnect attempt, ms. Default: 50–200 at random. */
  backoff?: () => number
  /**
   * Detects a dead link like a careful browser app: an app-level `ping` every
   * `everyMs`; no `pong` within `timeoutMs` drops the connection (and, with
   * `live`, resumes elsewhere). Absent: only a close is noticed.
   */
  ping?: { everyMs: number, timeoutMs: number }
}

/** Close codes after which the shipped client does not reconnect. */
const NO_RECONNECT = new Set([1000, 4000])
const CANDIDATE = /^c:(\d+)$/
const MESSAGE_ID = /^m(\d+)$/

export class ChurnPeer {
  /** The identity from the first welcome; later welcomes must repeat it. */
  peerId = ''
  token = ''
  /** The partner's peerId as the server announced it (joinResponse.peers / ready). */
  partnerId = ''
  partner: ChurnPeer | null = null
  ws: WebSocket | null = null
  /** True between a welcome and the close of that connection: only then does the peer send. */
  welcomed = false
  stopped = false
  readonly conns: ConnRecord[] = []
  /** Called after every welcome (resumed: a reconnect that kept the identity). */
  onWelcome: ((resumed: boolean) => void) | null = null

  // What this peer streamed to its partner: seq n is index n - 1.
  seq = 0
  readonly sentAt: number[] = []
  readonly sentOn: string[] = []
  readonly erroredSeqs = new Set<number>()
  /** The code each refused message was refused with (by the id it carried). */
  readonly refusedWith = new Map<number, string>()
  /** Connections this peer dropped because a ping went unanswered. */
  pingTimeouts = 0
  readonly errorCodes = new Map<string, number>()

  // What reached this peer from its partner.
  readonly got = new Map<number, number>()
  highest = 0
  reordered = 0
  /** Candidates whose `from` was not the partner. */
  foreign = 0
  peerDisconnected = 0
  identityChanges = 0
  resumes = 0
  /** Connections that closed before their welcome (refused upgrade, instance gone). */
  connectFailures = 0
  /**
   * Why each of those failed: the HTTP status of a refused upgrade ('503'),
   * the socket error ('ECONNREFUSED'), or else the close code it got
   * ('close 1001': upgraded, then closed before any welcome).
   */
  readonly connectFailureReasons = new Map<string, number>()
  notWelcomeFirst = 0
  readonly garbage: string[] = []
  /** Every frame except the streamed candidates (those are only counted). */
  readonly inbox: Frame[] = []
  readonly closeCodes = new Map<number, number>()
  /** Bumped on every candidate or error frame: settling waits until this stops moving. */
  activity = 0

  private readonly consumed = new Set<Frame>()
  private waiters: Array<{ match: (f: Frame) => boolean, resolve: (f: Frame) => void }> = []
  private reconnectTimer: NodeJS.Timeout | null = null
  private streamTimer: NodeJS.Timeout | null = null
  private current: ConnRecord | null = null
  private pingTimer: NodeJS.Timeout | null = null
  /** Connections given up on after a ping timeout (closed, not yet gone). */
  private readonly abandoned = new WeakSet<WebSocket>()
  private pongDeadline: NodeJS.Timeout | null = null

  constructor (readonly name: string, private readonly opts: PeerOptions = {}) {}

  /** Opens a connection and resolves with whether it got its welcome. */
  connect (endpoint: Endpoint, resume = false): Promise<boolean> {
    const url = resume ? `${endpoint.ws}?resume=${encodeURIComponent(this.token)}` : endpoint.ws
    const ws = new WebSocket(url)
    this.ws = ws
    this.welcomed = false
    let record: ConnRecord | null = null
    let first = true
    let failure: string | null = null
    return new Promise<boolean>((resolve) => {
      ws.on('error', (err: Error & { code?: string }) => {
        // A close follows. Before a welcome, remember why it failed.
        if (record !== null || failure !== null) return
        failure = /Unexpected server response: (\d+)/.exec(err.message)?.[1] ?? err.code ?? err.message
      })
      ws.on('message', (raw: Buffer, isBinary: boolean) => {
        const text = raw.toString()
        let frame: Frame
        try {
          frame = JSON.parse(text) as Frame
        } catch {
          this.garbage.push(text)
          return
        }
        if (isBinary || typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
          this.garbage.push(text)
          return
        }
        if (first) {
          first = false
          if (frame.type !== 'welcome') {
            this.notWelcomeFirst++
          } else {
            const peerId = String(frame.data?.peerId)
            if (this.peerId === '') this.peerId = peerId
            else if (peerId !== this.peerId) this.identityChanges++
            else if (resume) this.resumes++
            this.token = String(frame.data?.resumeToken)
            record = { server: endpoint.name, openedAt: Date.now(), closedAt: null, code: null, resumed: resume }
            this.conns.push(record)
            if (this.ws === ws) {
              this.current = record
              this.welcomed = true
              this.startPinging(ws, endpoint.name)
            }
            this.onWelcome?.(resume && peerId === this.peerId)
            resolve(true)
          }
        }
        this.onFrame(frame)
      })
      ws.on('close', (code: number) => {
        const now = Date.now()
        if (this.ws === ws) {
          this.ws = null
          this.welcomed = false
          this.current = null
          this.stopPinging()
        }
        this.closeCodes.set(code, (this.closeCodes.get(code) ?? 0) + 1)
        if (record !== null) {
          // An abandoned connection ended for this peer when it gave up on it.
          record.closedAt ??= now
          record.code = code
        } else {
          this.connectFailures++
          const reason = failure ?? `close ${code}`
          this.connectFailureReasons.set(reason, (this.connectFailureReasons.get(reason) ?? 0) + 1)
        }
        resolve(false)
        // Given up on already (a ping timeout): its reconnect is under way.
        if (this.abandoned.has(ws)) return
        if (this.stopped || this.opts.live === undefined || NO_RECONNECT.has(code)) return
        this.scheduleReconnect(endpoint.name)
      })
    })
  }

  private startPinging (ws: WebSocket, endpoint: string): void {
    const ping = this.opts.ping
    if (ping === undefined) return
    this.stopPinging()
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws || this.pongDeadline !== null) return
      ws.send(JSON.stringify({ type: 'ping', data: {} }))
      this.pongDeadline = setTimeout(() => {
        this.pongDeadline = null
        if (this.ws !== ws) return
        // The link is dead though the socket has not noticed: give it up and
        // resume elsewhere at once. Closed, not reset: a reset (ws.terminate(),
        // with frames from the server still unread here) makes the server's
        // kernel throw away what this peer wrote and the server had not read
        // yet (it was frozen), and no server can refuse what it never read.
        this.pingTimeouts++
        this.abandoned.add(ws)
        this.ws = null
        this.welcomed = false
        if (this.current !== null) this.current.closedAt = Date.now()
        this.current = null
        this.stopPinging()
        ws.close(4002, 'ping timeout')
        if (!this.stopped && this.opts.live !== undefined) this.scheduleReconnect(endpoint)
      }, ping.timeoutMs)
    }, ping.everyMs)
  }

  private stopPinging (): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer)
    if (this.pongDeadline !== null) clearTimeout(this.pongDeadline)
    this.pingTimer = null
    this.pongDeadline = null
  }

  private scheduleReconnect (lost: string): void {
    const delay = this.opts.backoff?.() ?? 50 + Math.random() * 150
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.stopped) return
      const next = this.opts.live?.pick(lost)
      if (next === undefined) {
        this.scheduleReconnect(lost)
        return
      }
      // A failed attempt closes too, which schedules the next one away from `next`.
      this.connect(next, true).catch(() => {})
    }, delay)
  }

  private onFrame (frame: Frame): void {
    if (frame.type === 'pong' && this.pongDeadline !== null) {
      clearTimeout(this.pongDeadline)
      this.pongDeadline = null
    }
    if (frame.type === 'ice-candidate') {
      const match = CANDIDATE.exec(String(frame.data?.candidate?.candidate))
      if (match !== null && frame.data?.from === this.partnerId && this.partnerId !== '') {
        const seq = Number(match[1])
        this.got.set(seq, (this.got.get(seq) ?? 0) + 1)
        if (seq < this.highest) this.reordered++
        this.highest = Math.max(this.highest, seq)
        this.activity++
        return
      }
      this.foreign++
    }
    if (frame.type === 'error') {
      const code = String(frame.data?.code)
      this.errorCodes.set(code, (this.errorCodes.get(code) ?? 0) + 1)
      const match = MESSAGE_ID.exec(frame.id ?? '')
      if (match !== null) {
        this.erroredSeqs.add(Number(match[1]))
        this.refusedWith.set(Number(match[1]), code)
      }
      this.activity++
    }
    if (frame.type === 'peer-disconnected') this.peerDisconnected++
    this.inbox.push(frame)
    const i = this.waiters.findIndex(w => w.match(frame))
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1)
      this.consumed.add(frame)
      w?.resolve(frame)
    }
  }

  /** The oldest frame not yet awaited that matches (waiting for it if needed). */
  next (match: string | ((f: Frame) => boolean), timeoutMs = 5000): Promise<Frame> {
    const test = typeof match === 'string' ? (f: Frame) => f.type === match : match
    const found = this.inbox.find(f => test(f) && !this.consumed.has(f))
    if (found !== undefined) {
      this.consumed.add(found)
      return Promise.resolve(found)
    }
    return new Promise((resolve, reject) => {
      const waiter = { match: test, resolve: (f: Frame) => { clearTimeout(timer); resolve(f) } }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter(w => w !== waiter)
        reject(new Error(`${this.name}: timed out waiting for ${typeof match === 'string' ? match : 'a frame'}; got ${this.inbox.map(f => f.type).join(',')}`))
      }, timeoutMs)
      this.waiters.push(waiter)
    })
  }

  /** Writes one envelope if the connection is open and welcomed; returns whether it did. */
  send (envelope: { type: string, data?: unknown, id?: string }): boolean {
    const ws = this.ws
    if (ws === null || !this.welcomed || ws.readyState !== WebSocket.OPEN) return false
    ws.send(JSON.stringify(envelope))
    return true
  }

  /** Sends with a fresh id and resolves with the frame that carries it back. */
  async request (type: string, data: unknown, timeoutMs = 5000): Promise<Frame> {
    const id = `r${Math.random().toString(36).slice(2)}`
    const reply = this.next(f => f.id === id, timeoutMs)
    if (!this.send({ type, data, id })) throw new Error(`${this.name}: not connected`)
    return await reply
  }

  async join (roomId: string): Promise<Frame> {
    const res = await this.request('join', { roomId })
    if (res.type !== 'joinResponse' || res.data?.success !== true) throw new Error(`${this.name}: join failed: ${JSON.stringify(res)}`)
    return res
  }

  /** The instance this peer's open connection is on, or null while it has none. */
  get server (): string | null {
    return this.current?.server ?? null
  }

  /** Sends the next numbered candidate to the partner every `everyMs` (skipped while disconnected). */
  startStreaming (everyMs = 20): void {
    const tick = (): void => {
      if (this.partnerId === '') return
      const seq = this.seq + 1
      const written = this.send({ type: 'ice-candidate', data: { peerId: this.partnerId, candidate: { candidate: `c:${seq}` } }, id: `m${seq}` })
      if (!written) return
      this.seq = seq
      this.sentAt.push(Date.now())
      this.sentOn.push(this.current?.server ?? '?')
    }
    this.streamTimer = setTimeout(() => {
      tick()
      this.streamTimer = setInterval(tick, everyMs)
    }, Math.random() * everyMs)
  }

  stopStreaming (): void {
    if (this.streamTimer !== null) {
      clearTimeout(this.streamTimer)
      clearInterval(this.streamTimer)
    }
    this.streamTimer = null
  }

  /** Drops the TCP connection without a close frame (1006 for both sides). */
  drop (): void {
    this.ws?.terminate()
  }

  /** Stops everything for good (teardown): no more sends or reconnects. */
  dispose (): void {
    this.stopped = true
    this.stopStreaming()
    this.stopPinging()
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    this.ws?.terminate()
    this.ws = null
    this.welcomed = false
  }

  /** The connection this peer had on `server` at time `at`, if any. */
  connAt (server: string, at: number): ConnRecord | undefined {
    return this.conns.find(c => c.server === server && c.openedAt <= at && (c.closedAt === null || c.closedAt >= at))
  }

  /** Where this peer was connected at time `at` ('-' while it had no connection). */
  serverAt (at: number): string {
    return this.conns.find(c => c.openedAt <= at && (c.closedAt === null || c.closedAt >= at))?.server ?? '-'
  }
}

export interface LostMessage { from: ChurnPeer, to: ChurnPeer, seq: number, sentAt: number, sentOn: string }

export interface Tally {
  sent: number
  accepted: number
  received: number
  lost: LostMessage[]
  /** Lost messages the scenario allows (in the dead process when it died). */
  excused: LostMessage[]
  duplicated: number
  reordered: number
  foreign: number
  errors: Map<string, number>
  peerDisconnected: number
  identityChanges: number
  resumes: number
  connectFailures: number
  /** Why connections failed before their welcome (see ChurnPeer.connectFailureReasons). */
  connectFailureReasons: Map<string, number>
  /** Close codes of connections that had their welcome (closeCodes also counts failed connects). */
  welcomedCloseCodes: Map<number, number>
  garbage: number
  notWelcomeFirst: number
  closeCodes: Map<number, number>
  /** Refused messages (an error named their id), by the code they were refused with. */
  refused: Map<string, number>
  /** Messages refused by id that reached their target all the same: never allowed. */
  refusedButDelivered: number
}

/**
 * Counts per directed pair (sender → its partner). A message is accepted when
 * it was written to an open socket and not answered with an `error` carrying
 * its id; lost when accepted and never received. `excuse` picks the losses a
 * scenario tolerates.
 */
export function tally (peers: ChurnPeer[], excuse: (m: LostMessage) => boolean = () => false): Tally {
  const out: Tally = {
    sent: 0,
    accepted: 0,
    received: 0,
    lost: [],
    excused: [],
    duplicated: 0,
    reordered: 0,
    foreign: 0,
    errors: new Map(),
    peerDisconnected: 0,
    identityChanges: 0,
    resumes: 0,
    connectFailures: 0,
    connectFailureReasons: new Map(),
    welcomedCloseCodes: new Map(),
    garbage: 0,
    notWelcomeFirst: 0,
    closeCodes: new Map(),
    refused: new Map(),
    refusedButDelivered: 0
  }
  for (const from of peers) {
    const to = from.partner
    if (to === null) throw new Error(`${from.name} has no partner`)
    out.sent += from.seq
    for (let seq = 1; seq <= from.seq; seq++) {
      const code = from.refusedWith.get(seq)
      if (code !== undefined) {
        out.refused.set(code, (out.refused.get(code) ?? 0) + 1)
        // outcome_unknown says "may or may not have arrived": either is true to it.
        if (to.got.has(seq) && code !== 'outcome_unknown') out.refusedButDelivered++
        continue
      }
      out.accepted++
      if (to.got.has(seq)) continue
      const lost = { from, to, seq, sentAt: from.sentAt[seq - 1] ?? 0, sentOn: from.sentOn[seq - 1] ?? '?' }
      if (excuse(lost)) out.excused.push(lost)
      else out.lost.push(lost)
    }
    out.received += to.got.size
    for (const count of to.got.values()) out.duplicated += count - 1
    out.reordered += from.reordered
    out.foreign += from.foreign
    for (const [code, n] of from.errorCodes) out.errors.set(code, (out.errors.get(code) ?? 0) + n)
    for (const [code, n] of from.closeCodes) out.closeCodes.set(code, (out.closeCodes.get(code) ?? 0) + n)
    out.peerDisconnected += from.peerDisconnected
    out.identityChanges += from.identityChanges
    out.resumes += from.resumes
    out.connectFailures += from.connectFailures
    for (const [reason, n] of from.connectFailureReasons) out.connectFailureReasons.set(reason, (out.connectFailureReasons.get(reason) ?? 0) + n)
    for (const c of from.conns) if (c.code !== null) out.welcomedCloseCodes.set(c.code, (out.welcomedCloseCodes.get(c.code) ?? 0) + 1)
    out.garbage += from.garbage.length
    out.notWelcomeFirst += from.notWelcomeFirst
  }
  return out
}

/** Accepted messages not (yet) received, over all pairs. */
export function outstanding (peers: ChurnPeer[]): number {
  let n = 0
  for (const from of peers) {
    const to = from.partner
    if (to === null) continue
    for (let seq = 1; seq <= from.seq; seq++) if (!from.erroredSeqs.has(seq) && !to.got.has(seq)) n++
  }
  return n
}

const list = <K>(m: Map<K, number>): string => [...m].map(([k, n]) => `${String(k)}:${n}`).join(' ') || 'none'

/** The one-line summary of a scenario. */
export function summary (label: string, r: Tally, inFlightLabel?: string): string {
  const lost = inFlightLabel === undefined
    ? `lost ${r.lost.length}`
    : `lost ${r.lost.length + r.excused.length} (${inFlightLabel} ${r.excused.length}, other ${r.lost.length})`
  return `${label}: sent ${r.sent}, accepted ${r.accepted}, received ${r.received}, ${lost}, ` +
    `duplicated ${r.duplicated}, reordered ${r.reordered}, refused ${list(r.refused)}, refused but delivered ${r.refusedButDelivered}, ` +
    `peer-disconnected ${r.peerDisconnected}, identity changes ${r.identityChanges}, resumes ${r.resumes}; ` +
    `errors ${list(r.errors)}; close codes ${list(r.closeCodes)}; failed connects ${r.connectFailures}; ` +
    `foreign ${r.foreign}, garbage ${r.garbage}, not-welcome-first ${r.notWelcomeFirst}`
}

/** How connections ended and failed: close codes of welcomed connections, failed connects and why. */
export function failureSummary (r: Tally): string {
  return `closed after welcome ${list(r.welcomedCloseCodes)}; failed connects ${r.connectFailures} (${list(r.connectFailureReasons)})`
}

/**
 * Where the lost messages were: sender's instance → receiver's instance at
 * send time ('-': no connection), and when, relative to the nearest event
 * before them (SIGTERM/SIGKILL).
 */
export function describeLost (lost: LostMessage[], events: Array<{ label: string, at: number }>, max = 6): string {
  if (lost.length === 0) return 'none'
  const routes = new Map<string, number>()
  const byEvent = new Map<string, number[]>()
  for (const m of lost) {
    const key = `${m.sentOn}->${m.to.serverAt(m.sentAt)}`
    routes.set(key, (routes.get(key) ?? 0) + 1)
    const before = events.filter(e => e.at <= m.sentAt + 500).at(-1)
    const label = before?.label ?? 'before any event'
    const offsets = byEvent.get(label) ?? []
    offsets.push(m.sentAt - (before?.at ?? m.sentAt))
    byEvent.set(label, offsets)
  }
  const when = [...byEvent].map(([label, offsets]) => {
    offsets.sort((a, b) => a - b)
    return `${label}: ${offsets.length} sent ${offsets[0]}..${offsets.at(-1)} ms after it`
  })
  const top = [...routes].sort((a, b) => b[1] - a[1]).slice(0, max).map(([k, n]) => `${k} ${n}`)
  return `by sender->receiver instance: ${top.join(', ')}; ${when.join('; ')}`
}

/** Joins a and then b to the room and learns each one's partner from the server (joinResponse.peers, ready). */
export async function pairUp (a: ChurnPeer, b: ChurnPeer, roomId: string): Promise<void> {
  await a.join(roomId)
  const joined = await b.join(roomId)
  const ready = await a.next(f => f.type === 'ready')
  a.partnerId = String(ready.data.peerId)
  b.partnerId = String((joined.data.peers as string[])[0])
  if (a.partnerId !== b.peerId || b.partnerId !== a.peerId || joined.data.peers.length !== 1) {
    throw new Error(`pairing ${roomId}: ${JSON.stringify({ a: a.peerId, b: b.peerId, ready: ready.data, peers: joined.data.peers })}`)
  }
  a.partner = b
  b.partner = a
}

const activity = (peers: ChurnPeer[]) => peers.reduce((n, p) => n + p.activity, 0)

/** After the senders stop: wait until every accepted message arrived, or nothing has moved for 2 s (at most 10 s). */
export async function settle (peers: ChurnPeer[]): Promise<void> {
  let seen = activity(peers)
  let changedAt = Date.now()
  await until(() => {
    const now = activity(peers)
    if (now !== seen) {
      seen = now
      changedAt = Date.now()
    }
    return outstanding(peers) === 0 || Date.now() - changedAt >= 2000
  }, 10_000, 50)
}
