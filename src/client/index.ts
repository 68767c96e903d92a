/*
 * Typed client for the PrivyDrop signaling server, for browsers (native
 * WebSocket and fetch) and Node 22+ (or any WebSocket implementation passed
 * in). No runtime dependencies. It gives what web apps got from
 * socket.io-client: typed events, request/response with timeouts, sends
 * queued while disconnected, automatic reconnect that keeps the identity
 * through the resume token, and an application-level ping to notice dead links.
 */
import type { ClientData, ClientMessageType, ServerData, ServerMessageType } from '../../schemas/ws'
import type {
  CheckRoomResponse, GetRoomResponse, IceServer, IceServersResponse, LeaveRoomBody, SuccessMessage
} from '../../schemas/rest'

export type { ClientData, ClientMessageType, ServerData, ServerMessageType, IceServer }

/** The part of the WebSocket API the client uses (browsers' and `ws`'s both fit). */
export interface WebSocketLike {
  readonly readyState: number
  send (data: string): void
  close (code?: number, reason?: string): void
  addEventListener (type: string, listener: (event: any) => void): void
  removeEventListener (type: string, listener: (event: any) => void): void
}
export type WebSocketConstructor = new (url: string) => WebSocketLike

export interface ReconnectOptions {
  /** First delay after a drop (ms). */
  initialDelayMs: number
  /** Cap on the delay (ms). */
  maxDelayMs: number
  /** Growth per attempt. */
  factor: number
  /** 0..1: each delay is drawn uniformly from [delay × (1 − jitter), delay]. */
  jitter: number
}

export interface SignalingClientOptions {
  /** ws:// or wss:// URL of the /ws endpoint. */
  url: string
  /** WebSocket implementation; defaults to globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor
  /** Timeout for join, leave and ping replies (ms). Default 10000. */
  requestTimeoutMs?: number
  /** Automatic reconnect with backoff and jitter; false to disable. */
  reconnect?: Partial<ReconnectOptions> | false
  /** Application-level ping interval (ms); default: the server's heartbeatMs. 0 disables. */
  pingIntervalMs?: number
  /** A ping unanswered this long means the link is dead: reconnect (ms). Default 10000. */
  pingTimeoutMs?: number
  /** Messages kept while disconnected; the oldest are dropped beyond it. Default 1000. */
  maxQueue?: number
  /** `onRefused` callbacks kept at most; the oldest are forgotten beyond it. Default 1000. */
  maxRefusalCallbacks?: number
  /** An `onRefused` callback is forgotten this long after its message was written to the socket (ms). Default 120000. */
  refusalCallbackTtlMs?: number
}

/**
 * An `error` frame: the server refused one message, or a frame it could not
 * read. `id` is the refused message's id, when it had one (every message
 * `send()` writes has one).
 */
export type SignalingErrorEvent = ServerData<'error'> & { id?: string }

/** The options of one `send()` (and of `offer`, `answer`, `iceCandidate`, `initiatorOnline`, `recipientReady`). */
export interface SendOptions {
  /** Correlation id (1 to 64 printable characters); default `c-<n>`, unique in this client. */
  id?: string
  /**
   * Called when the server refuses this message (an `error` frame with its id),
   * before the `error` event for the same frame. An accepted message gets no
   * reply at all: silence is success. Kept for `refusalCallbackTtlMs` after the
   * message was written, and for at most `maxRefusalCallbacks` messages; a
   * message dropped from the queue (`maxQueue`) or discarded with an old
   * session (`open` with `resumed: false`) is never reported.
   */
  onRefused?: (err: SignalingErrorEvent & { id: string }) => void
}

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed'

/** Events besides the server's messages. */
export interface ConnectionEvents {
  /** After every welcome: `resumed` is false when the server gave a new identity (rejoin rooms then). */
  open: { peerId: string, resumed: boolean, iceServers: IceServer[] }
  close: { code: number, reason: string, willReconnect: boolean }
  reconnecting: { attempt: number, delayMs: number }
}

export type ServerEvents = { [T in Exclude<ServerMessageType, 'error'>]: ServerData<T> } & { error: SignalingErrorEvent }
export type SignalingEvents = ServerEvents & ConnectionEvents

/** A request the server answered with an `error` frame, or that got no answer. */
export class SignalingError extends Error {
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.name = 'SignalingError'
    this.code = code
  }
}

interface Queued {
  text: string
  id: string
}

interface Refusal {
  fn: NonNullable<SendOptions['onRefused']>
  /** When the message was written to the socket (Date.now()); its send() time while queued. */
  at: number
}

interface Pending {
  resolve: (frame: { type: string, data: unknown }) => void
  reject: (err: Error) => void
  timer: ReturnType<typeof setTimeout>
}

const OPEN = 1
const DEFAULT_RECONNECT: ReconnectOptions = { initialDelayMs: 250, maxDelayMs: 10_000, factor: 2, jitter: 0.5 }
/** An 'error' event is always followed by a close event, which is what the client acts on. */
const ignoreError = (): void => {}
/** Close codes after which reconnecting would be wrong. */
const NO_RECONNECT = new Set([1000, 4000])
/**
 * The server moves a live session elsewhere: 1001 (shutdown, drain) and 1012
 * (service restart: an instance cut off from Redis). The client resumes at once
 * (the first backoff step, at most `initialDelayMs`), not after a grown backoff.
 */
const GOING_AWAY = new Set([1001, 1012])

export class SignalingClient {
  peerId: string | null = null
  resumeToken: string | null = null
  iceServers: IceServer[] = []
  state: ConnectionState = 'closed'

  private readonly opts: SignalingClientOptions
  private readonly reconnectOpts: ReconnectOptions | false
  private readonly Ctor: WebSocketConstructor
  private ws: WebSocketLike | null = null
  private welcomed = false
  private queue: Queued[] = []
  private readonly listeners = new Map<string, Set<(data: any) => void>>()
  private readonly pending = new Map<string, Pending>()
  /** onRefused callbacks by message id, oldest first (the order of `at`). */
  private readonly refusals = new Map<string, Refusal>()
  private nextId = 1
  private attempt = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private pingTimer: ReturnType<typeof setInterval> | null = null
  private pingDeadline: ReturnType<typeof setTimeout> | null = null
  private detach: (() => void) | null = null

  constructor (opts: SignalingClientOptions) {
    this.opts = opts
    this.reconnectOpts = opts.reconnect === false ? false : { ...DEFAULT_RECONNECT, ...opts.reconnect }
    const Ctor = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (Ctor === undefined) throw new Error('no WebSocket implementation: pass options.WebSocket')
    this.Ctor = Ctor
  }

  /** Opens the connection; resolves with the first welcome. */
  connect (): Promise<ConnectionEvents['open']> {
    if (this.state === 'closed') {
      this.state = 'connecting'
      this.open()
    }
    return new Promise((resolve) => this.once('open', resolve))
  }

  /** Subscribes to a server message or a connection event; returns the unsubscribe function. */
  on<K extends keyof SignalingEvents> (type: K, fn: (data: SignalingEvents[K]) => void): () => void {
    let set = this.listeners.get(type)
    if (set === undefined) {
      set = new Set()
      this.listeners.set(type, set)
    }
    set.add(fn)
    return () => this.off(type, fn)
  }

  once<K extends keyof SignalingEvents> (type: K, fn: (data: SignalingEvents[K]) => void): () => void {
    const off = this.on(type, (data) => {
      off()
      fn(data)
    })
    return off
  }

  off<K extends keyof SignalingEvents> (type: K, fn: (data: SignalingEvents[K]) => void): void {
    this.listeners.get(type)?.delete(fn)
  }

  /**
   * Sends a message; while disconnected it is queued and sent after the next
   * welcome. Returns its id (the given one, or a new `c-<n>`): an `error` frame
   * refusing it carries that id (see `SendOptions.onRefused`). The third
   * argument may also be the id itself.
   */
  send<T extends ClientMessageType> (type: T, data: ClientData<T>, opts?: string | SendOptions): string {
    const { id = `c-${this.nextId++}`, onRefused } = typeof opts === 'string' ? { id: opts } : opts ?? {}
    const text = JSON.stringify({ type, data, id })
    if (onRefused !== undefined) this.watch(id, onRefused)
    if (this.ws !== null && this.ws.readyState === OPEN && this.welcomed) {
      this.ws.send(text)
      return id
    }
    this.queue.push({ text, id })
    const max = this.opts.maxQueue ?? 1000
    if (this.queue.length > max) {
      for (const dropped of this.queue.splice(0, this.queue.length - max)) this.refusals.delete(dropped.id)
    }
    return id
  }

  /** Sends a message with a correlation id and resolves with the server's direct reply. */
  request<T extends ClientMessageType, R extends ServerMessageType> (type: T, data: ClientData<T>, timeoutMs = this.opts.requestTimeoutMs ?? 10_000): Promise<ServerData<R>> {
    const id = `c-${this.nextId++}`
    return new Promise<ServerData<R>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new SignalingError('timeout', `no reply to ${type} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, {
        timer,
        reject,
        resolve: (frame) => {
          if (frame.type === 'error') {
            const err = frame.data as ServerData<'error'>
            reject(new SignalingError(err.code, err.message))
          } else {
            resolve(frame.data as ServerData<R>)
          }
        }
      })
      this.send(type, data, id)
    })
  }

  /** Joins a room; rejects with a SignalingError carrying joinResponse.code on failure. */
  async join (roomId: string): Promise<ServerData<'joinResponse'>> {
    const res = await this.request<'join', 'joinResponse'>('join', { roomId })
    if (!res.success) throw new SignalingError(res.code ?? 'join_failed', res.message)
    return res
  }

  leave (roomId: string): Promise<ServerData<'leaveResponse'>> {
    return this.request<'leave', 'leaveResponse'>('leave', { roomId })
  }

  ping (): Promise<ServerData<'pong'>> {
    return this.request<'ping', 'pong'>('ping', {})
  }

  /** Relays an offer; returns the message id (see `send`). */
  offer (peerId: string, offer: ClientData<'offer'>['offer'], opts?: SendOptions): string {
    return this.send('offer', { peerId, offer }, opts)
  }

  answer (peerId: string, answer: ClientData<'answer'>['answer'], opts?: SendOptions): string {
    return this.send('answer', { peerId, answer }, opts)
  }

  iceCandidate (peerId: string, candidate: ClientData<'ice-candidate'>['candidate'], opts?: SendOptions): string {
    return this.send('ice-candidate', { peerId, candidate }, opts)
  }

  initiatorOnline (roomId: string, opts?: SendOptions): string {
    return this.send('initiator-online', { roomId }, opts)
  }

  recipientReady (roomId: string | null = null, opts?: SendOptions): string {
    return this.send('recipient-ready', { roomId }, opts)
  }

  /**
   * Drops the current connection as a network failure would (not a clean
   * close), then reconnects and resumes. Useful after a network change.
   */
  reconnectNow (): void {
    if (this.ws === null || this.state === 'closed') return
    this.dropSocket(4001, 'client reconnect')
    this.scheduleReconnect(0)
  }

  /** Closes for good: the server tells the room at once. */
  close (): void {
    this.state = 'closed'
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    this.stopPing()
    const ws = this.ws
    this.detach?.()
    this.ws = null
    ws?.close(1000, 'bye')
    this.refusals.clear()
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer)
      p.reject(new SignalingError('closed', 'client closed'))
      this.pending.delete(id)
    }
  }

  // --- internals ---------------------------------------------------------------

  private emit<K extends keyof SignalingEvents> (type: K, data: SignalingEvents[K]): void {
    const set = this.listeners.get(type)
    if (set === undefined) return
    for (const fn of [...set]) fn(data)
  }

  private open (): void {
    const url = this.resumeToken === null
      ? this.opts.url
      : `${this.opts.url}${this.opts.url.includes('?') ? '&' : '?'}resume=${encodeURIComponent(this.resumeToken)}`
    const ws = new this.Ctor(url)
    this.ws = ws
    this.welcomed = false
    const onMessage = (event: { data: unknown }) => this.onMessage(String(event.data))
    const onClose = (event: { code: number, reason: string }) => this.onClose(event.code, event.reason)
    ws.addEventListener('message', onMessage)
    ws.addEventListener('close', onClose)
    // Never removed: a socket closed or terminated while still CONNECTING emits
    // 'error' on the next tick ("closed before the connection was established"),
    // and with Node's `ws` an 'error' nobody listens to is an uncaught exception.
    ws.addEventListener('error', ignoreError)
    this.detach = () => {
      ws.removeEventListener('message', onMessage)
      ws.removeEventListener('close', onClose)
    }
  }

  private onMessage (text: string): void {
    let frame: { type: string, data: any, id?: string }
    try {
      frame = JSON.parse(text) as typeof frame
    } catch {
      return
    }
    if (frame.type === 'welcome') {
      this.onWelcome(frame.data as ServerData<'welcome'>)
      return
    }
    if (frame.type === 'pong' && this.pingDeadline !== null) {
      clearTimeout(this.pingDeadline)
      this.pingDeadline = null
    }
    if (frame.id !== undefined) {
      const p = this.pending.get(frame.id)
      if (p !== undefined) {
        clearTimeout(p.timer)
        this.pending.delete(frame.id)
        p.resolve(frame)
      }
    }
    if (frame.type === 'error' && frame.id !== undefined) {
      // The same object goes to onRefused and to the error listeners.
      const err: SignalingErrorEvent & { id: string } = { ...(frame.data as ServerData<'error'>), id: frame.id }
      this.refused(err)
      this.emit('error', err)
      return
    }
    this.emit(frame.type as ServerMessageType, frame.data)
  }

  /** Keeps an onRefused callback, forgetting expired ones and the oldest beyond the cap. */
  private watch (id: string, fn: Refusal['fn']): void {
    this.refusals.delete(id)
    this.refusals.set(id, { fn, at: Date.now() })
    this.forgetExpired()
    const max = Math.max(0, this.opts.maxRefusalCallbacks ?? 1000)
    for (const oldest of this.refusals.keys()) {
      if (this.refusals.size <= max) break
      this.refusals.delete(oldest)
    }
  }

  private forgetExpired (): void {
    const since = Date.now() - (this.opts.refusalCallbackTtlMs ?? 120_000)
    for (const [id, r] of this.refusals) {
      if (r.at >= since) break
      this.refusals.delete(id)
    }
  }

  private refused (err: SignalingErrorEvent & { id: string }): void {
    this.forgetExpired()
    const r = this.refusals.get(err.id)
    if (r === undefined) return
    this.refusals.delete(err.id)
    r.fn(err)
  }

  private onWelcome (welcome: ServerData<'welcome'>): void {
    const resumed = this.peerId !== null && welcome.peerId === this.peerId
    if (this.peerId !== null && !resumed) {
      // A new identity: what was queued or awaited belonged to the old session.
      this.queue = []
      this.refusals.clear()
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer)
        p.reject(new SignalingError('session_lost', 'the server started a new session; join again'))
        this.pending.delete(id)
      }
    }
    this.peerId = welcome.peerId
    this.resumeToken = welcome.resumeToken
    this.iceServers = welcome.iceServers
    this.state = 'open'
    this.welcomed = true
    this.attempt = 0
    const queued = this.queue
    this.queue = []
    const now = Date.now()
    for (const { text, id } of queued) {
      this.ws?.send(text)
      // A callback's lifetime counts from when its message is written.
      const r = this.refusals.get(id)
      if (r !== undefined) {
        this.refusals.delete(id)
        this.refusals.set(id, { fn: r.fn, at: now })
      }
    }
    this.startPing(welcome.heartbeatMs)
    this.emit('welcome', welcome)
    this.emit('open', { peerId: welcome.peerId, resumed, iceServers: welcome.iceServers })
  }

  private onClose (code: number, reason: string): void {
    const wasWelcomed = this.welcomed
    this.detach?.()
    this.ws = null
    this.welcomed = false
    this.stopPing()
    const willReconnect = this.state !== 'closed' && this.reconnectOpts !== false && !NO_RECONNECT.has(code)
    // A live session the server moves elsewhere resumes at once; a connection
    // refused that way before its welcome backs off as usual (every instance
    // may be saying it).
    if (wasWelcomed && GOING_AWAY.has(code)) this.attempt = 0
    this.emit('close', { code, reason, willReconnect })
    if (willReconnect) this.scheduleReconnect()
    else this.state = 'closed'
  }

  private dropSocket (code: number, reason: string): void {
    const ws = this.ws
    this.detach?.()
    this.ws = null
    this.welcomed = false
    this.stopPing()
    try {
      // Node's ws can drop the TCP connection at once; a browser socket can only close.
      const terminate = (ws as { terminate?: () => void } | null)?.terminate
      if (typeof terminate === 'function') terminate.call(ws)
      else ws?.close(code, reason)
    } catch { /* already closing */ }
    this.emit('close', { code, reason, willReconnect: true })
  }

  private scheduleReconnect (delayOverride?: number): void {
    if (this.reconnectOpts === false || this.state === 'closed') return
    const { initialDelayMs, maxDelayMs, factor, jitter } = this.reconnectOpts
    const base = Math.min(maxDelayMs, initialDelayMs * factor ** this.attempt)
    const delayMs = delayOverride ?? Math.round(base * (1 - jitter * Math.random()))
    this.attempt++
    this.state = 'reconnecting'
    this.emit('reconnecting', { attempt: this.attempt, delayMs })
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.state !== 'closed') this.open()
    }, delayMs)
  }

  private startPing (heartbeatMs: number): void {
    this.stopPing()
    const every = this.opts.pingIntervalMs ?? heartbeatMs
    if (every <= 0) return
    const timeoutMs = this.opts.pingTimeoutMs ?? 10_000
    this.pingTimer = setInterval(() => {
      if (this.ws === null || !this.welcomed || this.pingDeadline !== null) return
      this.ws.send(JSON.stringify({ type: 'ping', data: {} }))
      this.pingDeadline = setTimeout(() => {
        this.pingDeadline = null
        // No pong: the link is dead even if the socket has not noticed yet.
        this.dropSocket(4002, 'ping timeout')
        this.scheduleReconnect()
      }, timeoutMs)
    }, every)
  }

  private stopPing (): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer)
    if (this.pingDeadline !== null) clearTimeout(this.pingDeadline)
    this.pingTimer = null
    this.pingDeadline = null
  }
}

// --- REST -----------------------------------------------------------------------

export class RestError extends Error {
  readonly status: number
  readonly body: unknown
  constructor (status: number, body: unknown) {
    const message = typeof body === 'object' && body !== null && 'message' in body ? String((body as { message: unknown }).message) : `HTTP ${status}`
    super(message)
    this.name = 'RestError'
    this.status = status
    this.body = body
  }
}

type FetchLike = (url: string, init?: { method?: string, headers?: Record<string, string>, body?: string, keepalive?: boolean }) => Promise<{ ok: boolean, status: number, json: () => Promise<unknown> }>

/** Helpers for the REST routes, over fetch. `baseUrl` is the server's http(s) origin. */
export function createRestClient (baseUrl: string, fetchImpl: FetchLike = globalThis.fetch as unknown as FetchLike) {
  const base = baseUrl.replace(/\/$/, '')
  async function call<T> (method: 'GET' | 'POST', path: string, body?: unknown, keepalive = false): Promise<T> {
    const res = await fetchImpl(base + path, {
      method,
      keepalive,
      ...(body !== undefined && { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    })
    const parsed = await res.json().catch(() => null)
    if (!res.ok) throw new RestError(res.status, parsed)
    return parsed as T
  }
  return {
    createRoom: (roomId: string) => call<SuccessMessage>('POST', '/api/create_room', { roomId }),
    getRoom: () => call<GetRoomResponse>('GET', '/api/get_room'),
    checkRoom: (roomId: string) => call<CheckRoomResponse>('POST', '/api/check_room', { roomId }),
    /** keepalive: survives page unload like sendBeacon. */
    leaveRoom: (body: LeaveRoomBody) => call<SuccessMessage>('POST', '/api/leave_room', body, true),
    iceServers: () => call<IceServersResponse>('GET', '/api/ice_servers'),
    track: (ref: string, path?: string) => call<{ success: boolean }>('POST', '/api/set_track', { ref, timestamp: Date.now(), ...(path !== undefined && { path }) })
  }
}
