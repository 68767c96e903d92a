/*
 * A socket.io-client look-alike for the PrivyDrop web app, built on the
 * shipped SignalingClient (reconnect with resume, queued sends, dead-link
 * detection). It covers the subset the web app uses: `io(url, opts)`, `on`,
 * `once`, `off`, `emit(event, data)`, `id`, `connected`, `connect()`,
 * `disconnect()` and the `connect` / `disconnect` / `connect_error` events.
 * Swap `import { io } from 'socket.io-client'` for
 * `import { io } from 'privydrop-signaling/socket.io'`.
 *
 * Differences from socket.io-client, on purpose:
 * - Transport: one WebSocket to the server's `/ws`; `path` and `transports`
 *   are ignored (there is no HTTP long-polling fallback).
 * - The server's `error` frames ({ code, message, type? }) arrive as
 *   `signaling_error`, never as `error`: the web app treats `error` as fatal,
 *   and these are per-message refusals (peer_not_found, not_in_room, …). For
 *   a refused `emit`, they also name it: its `id`, `event` and target `peerId`.
 *   `error` is never emitted; a failed connection attempt is `connect_error`,
 *   as in socket.io-client v4.
 * - `join` while bound to another room leaves that room first.
 * - No acknowledgements, namespaces, rooms-by-name, `volatile`, `timeout()`,
 *   `onAny`, binary payloads or the `socket.io` Manager: `emit` takes one
 *   data object, as the wire protocol does.
 */
import {
  SignalingClient, type ClientData, type ClientMessageType, type ServerData, type ServerMessageType,
  type SignalingClientOptions, type SignalingErrorEvent, type WebSocketConstructor
} from './index'

export type { WebSocketConstructor }

/** socket.io's disconnect reasons that this transport can produce. */
export type DisconnectReason = 'io server disconnect' | 'io client disconnect' | 'ping timeout' | 'transport close'

export interface DisconnectDetails {
  /** WebSocket close code (4001: dropped by the client to reconnect, 4002: ping timeout). */
  code: number
  reason: string
}

/**
 * A server `error` frame as `signaling_error`: `{ code, message, type? }`, plus
 * what identifies the refused message. `id` is its id (every `emit` gets one);
 * `event` the emitted event (e.g. 'offer'; the frame's `type` when the message
 * is not known); `peerId` the target of a refused relay (offer, answer,
 * ice-candidate), from the emitted data.
 */
export type SignalingErrorDetails = SignalingErrorEvent & { event?: string, peerId?: string }

/** Server messages as events (`error` frames renamed), plus socket.io's reserved events. */
export type SocketEvents = { [T in Exclude<ServerMessageType, 'welcome' | 'error'>]: ServerData<T> }
export interface ReservedEvents {
  connect: () => void
  disconnect: (reason: DisconnectReason, details: DisconnectDetails) => void
  connect_error: (err: Error) => void
  /** A server `error` frame: the message it answers was refused; the connection stays up. */
  signaling_error: (err: SignalingErrorDetails) => void
}

export interface SocketOptions {
  /** Ignored: the server has one endpoint (see `wsPath`). Accepted for socket.io compatibility. */
  path?: string
  /** Ignored: always a WebSocket (no polling). Accepted for socket.io compatibility. */
  transports?: string[]
  /** Connect on creation (default true), as socket.io does. */
  autoConnect?: boolean
  /** false disables automatic reconnect. */
  reconnection?: boolean
  /** First reconnect delay in ms (default: SignalingClient's, 250). */
  reconnectionDelay?: number
  /** Cap on the reconnect delay in ms (default: SignalingClient's, 10000). */
  reconnectionDelayMax?: number
  /** 0..1 jitter on each delay (default 0.5). */
  randomizationFactor?: number
  /** Path of the signaling endpoint on the server (default "/ws"). */
  wsPath?: string
  /** WebSocket implementation; defaults to globalThis.WebSocket (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor
  /** Further SignalingClient options (ping interval, queue size, request timeout). */
  signaling?: Partial<Omit<SignalingClientOptions, 'url' | 'WebSocket'>>
}

type Listener = (...args: any[]) => void
type KnownListener<E extends string> =
  E extends keyof ReservedEvents ? ReservedEvents[E]
    : E extends keyof SocketEvents ? (data: SocketEvents[E]) => void
      : Listener

/** Every server message type: a Record, so the compiler checks the list against the schema both ways. */
const SERVER_TYPES = Object.keys({
  welcome: true,
  joinResponse: true,
  leaveResponse: true,
  ready: true,
  offer: true,
  answer: true,
  'ice-candidate': true,
  'initiator-online': true,
  'recipient-ready': true,
  'peer-disconnected': true,
  pong: true,
  error: true
} satisfies Record<ServerMessageType, true>) as ServerMessageType[]

/** The messages relayed to one peer (data.peerId is the target). */
const RELAYS = new Set(['offer', 'answer', 'ice-candidate'])

/** Names socket.io refuses to emit; so do we. */
const RESERVED = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'])

/** Maps a socket.io URL (http(s)://host[:port][/namespace]) to the server's WebSocket endpoint. */
export function toWebSocketUrl (uri: string | undefined, wsPath = '/ws'): string {
  const base = (globalThis as { location?: { href: string } }).location?.href
  const url = new URL(uri ?? base ?? '', base)
  if (url.protocol === 'http:') url.protocol = 'ws:'
  else if (url.protocol === 'https:') url.protocol = 'wss:'
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new TypeError(`io(): unsupported URL ${url.href}`)
  return `${url.protocol}//${url.host}${wsPath}`
}

export class Socket {
  /** The server-assigned peerId; undefined before the first connection; kept across resumes. */
  id: string | undefined = undefined
  connected = false
  /** The underlying client (e.g. `socket.signaling.reconnectNow()` after a network change). */
  readonly signaling: SignalingClient

  private readonly handlers = new Map<string, Array<{ fn: Listener, once: boolean }>>()
  /** The room this socket is bound to, or is joining (the last join sent, unless refused). */
  private room: string | null = null
  private joinSeq = 0
  /** What an emit refused by an error frame was, keyed by that frame's event object (see refusable). */
  private readonly refusedEmits = new WeakMap<object, { event: string, peerId?: string }>()

  constructor (uri: string | undefined, opts: SocketOptions = {}) {
    const reconnect = opts.reconnection === false
      ? false as const
      : {
          ...(opts.reconnectionDelay !== undefined && { initialDelayMs: opts.reconnectionDelay }),
          ...(opts.reconnectionDelayMax !== undefined && { maxDelayMs: opts.reconnectionDelayMax }),
          ...(opts.randomizationFactor !== undefined && { jitter: opts.randomizationFactor })
        }
    this.signaling = new SignalingClient({
      ...opts.signaling,
      url: toWebSocketUrl(uri, opts.wsPath),
      reconnect,
      ...(opts.WebSocket !== undefined && { WebSocket: opts.WebSocket })
    })
    for (const type of SERVER_TYPES) {
      if (type === 'welcome' || type === 'error') continue
      this.signaling.on(type, (data) => this.fire(type, data))
    }
    this.signaling.on('error', (err) => {
      // onRefused (refusable) ran just before, with this same object.
      const emitted = this.refusedEmits.get(err)
      const event = emitted?.event ?? err.type
      this.fire('signaling_error', {
        ...err,
        ...(event !== undefined && { event }),
        ...(emitted?.peerId !== undefined && { peerId: emitted.peerId })
      } satisfies SignalingErrorDetails)
    })
    this.signaling.on('open', ({ peerId, resumed }) => {
      // A new identity (the grace ran out) has no room on the server.
      if (!resumed) this.room = null
      this.id = peerId
      this.connected = true
      this.fire('connect')
    })
    this.signaling.on('close', ({ code, reason, willReconnect }) => {
      if (!this.connected) {
        this.fire('connect_error', Object.assign(new Error(`websocket closed before the server's welcome (${code})`), { code, reason }))
        return
      }
      this.connected = false
      this.fire('disconnect', disconnectReason(code, willReconnect), { code, reason })
    })
    if (opts.autoConnect !== false) this.connect()
  }

  get disconnected (): boolean {
    return !this.connected
  }

  /** Whether the socket is connected or will reconnect by itself. */
  get active (): boolean {
    return this.signaling.state !== 'closed'
  }

  /** Opens the connection (after `autoConnect: false`, or after `disconnect()` / a server close). */
  connect (): this {
    if (this.signaling.state === 'closed') {
      this.signaling.connect().catch(() => {})
    }
    return this
  }

  /** Alias of connect(), as in socket.io. */
  open (): this {
    return this.connect()
  }

  /** Closes for good: the server tells the room at once. No reconnect until connect(). */
  disconnect (): this {
    const was = this.connected
    this.connected = false
    this.room = null
    this.signaling.close()
    if (was) this.fire('disconnect', 'io client disconnect', { code: 1000, reason: 'bye' })
    return this
  }

  /** Alias of disconnect(), as in socket.io. */
  close (): this {
    return this.disconnect()
  }

  on<E extends string> (event: E, fn: KnownListener<E>): this {
    return this.add(event, fn as Listener, false)
  }

  once<E extends string> (event: E, fn: KnownListener<E>): this {
    return this.add(event, fn as Listener, true)
  }

  /** off(event, fn) removes that handler (also one added with once); off(event) all of the event's; off() all. */
  off<E extends string> (event?: E, fn?: KnownListener<E>): this {
    if (event === undefined) this.handlers.clear()
    else if (fn === undefined) this.handlers.delete(event)
    else {
      const list = this.handlers.get(event)?.filter(l => l.fn !== fn)
      if (list === undefined || list.length === 0) this.handlers.delete(event)
      else this.handlers.set(event, list)
    }
    return this
  }

  removeListener<E extends string> (event?: E, fn?: KnownListener<E>): this {
    return this.off(event, fn)
  }

  removeAllListeners (event?: string): this {
    return this.off(event)
  }

  listeners (event: string): Listener[] {
    return (this.handlers.get(event) ?? []).map(l => l.fn)
  }

  hasListeners (event: string): boolean {
    return (this.handlers.get(event)?.length ?? 0) > 0
  }

  /**
   * Sends `{ type: event, data }`. While disconnected it is queued and sent
   * after the next connect. `join` for another room than the bound one sends
   * `leave` for the old room first.
   */
  emit<T extends ClientMessageType> (event: T, data: ClientData<T>): this
  emit (event: string, data?: unknown): this
  emit (event: string, ...args: unknown[]): this {
    if (RESERVED.has(event)) throw new Error(`"${event}" is a reserved event name`)
    if (args.length > 0 && typeof args[args.length - 1] === 'function') {
      throw new TypeError('privydrop-signaling/socket.io: acknowledgements are not supported')
    }
    if (args.length > 1) throw new TypeError('privydrop-signaling/socket.io: emit takes one data argument')
    const data = args[0]
    if (event === 'join') this.join(data)
    else {
      if (event === 'leave' && this.room !== null && roomOf(data) === this.room) this.room = null
      this.signaling.send(event as ClientMessageType, data as never, this.refusable(event, data))
    }
    return this
  }

  // --- internals ---------------------------------------------------------------

  private join (data: unknown): void {
    const roomId = roomOf(data)
    if (this.room !== null && roomId !== undefined && roomId !== this.room) {
      this.signaling.send('leave', { roomId: this.room })
    }
    if (roomId !== undefined) this.room = roomId
    const seq = ++this.joinSeq
    // A request (with a correlation id) so the reply is known to answer this join;
    // listeners get the joinResponse as usual.
    this.signaling.request<'join', 'joinResponse'>('join', data as ClientData<'join'>).then((res) => {
      if (seq === this.joinSeq && !res.success && this.room === res.roomId) this.room = null
    }, (err: { code?: string }) => {
      // A timeout is not a refusal: a join queued through a long outage still goes out.
      if (seq === this.joinSeq && this.room === roomId && err.code !== 'timeout') this.room = null
    })
  }

  /** Send options that note what a refusal of this emit refuses, for signaling_error. */
  private refusable (event: string, data: unknown) {
    const peerId = RELAYS.has(event) ? (data as { peerId?: unknown } | null | undefined)?.peerId : undefined
    return {
      onRefused: (err: SignalingErrorEvent) => {
        this.refusedEmits.set(err, { event, ...(typeof peerId === 'string' && { peerId }) })
      }
    }
  }

  private add (event: string, fn: Listener, once: boolean): this {
    const list = this.handlers.get(event)
    if (list === undefined) this.handlers.set(event, [{ fn, once }])
    else list.push({ fn, once })
    return this
  }

  private fire (event: string, ...args: unknown[]): void {
    const list = this.handlers.get(event)
    if (list === undefined) return
    for (const l of [...list]) {
      if (l.once) {
        const rest = this.handlers.get(event)?.filter(other => other !== l) ?? []
        if (rest.length === 0) this.handlers.delete(event)
        else this.handlers.set(event, rest)
      }
      l.fn(...args)
    }
  }
}

function roomOf (data: unknown): string | undefined {
  const roomId = (data as { roomId?: unknown } | null | undefined)?.roomId
  return typeof roomId === 'string' ? roomId : undefined
}

function disconnectReason (code: number, willReconnect: boolean): DisconnectReason {
  if (code === 4002) return 'ping timeout'
  // The client will not reconnect (a server close with 1000, or 4000 "replaced"): socket.io's wording.
  if (!willReconnect) return 'io server disconnect'
  // Everything else reconnects by itself, e.g. 1001 (server shutdown), 1012
  // (an instance leaving: Redis unreachable), 1006 (network loss), 4001.
  return 'transport close'
}

/** Creates a socket and (unless `autoConnect: false`) connects it. `io(opts)` uses the page's origin. */
export function io (uri?: string | SocketOptions, opts?: SocketOptions): Socket {
  if (typeof uri === 'object') return new Socket(undefined, uri)
  return new Socket(uri, opts)
}

export default io
