import type { LogFn } from 'pino'
import type { ErrorCode } from '../../schemas/ws'

/** The slice of a pino logger the core uses (Fastify's logger fits). */
export interface Logger {
  child (bindings: Record<string, unknown>): Logger
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
}

/** What the core needs from a socket (a `ws` WebSocket fits). */
export interface Transport {
  send (data: string): void
  close (code: number, reason: string): void
  terminate (): void
  ping (): void
  readonly bufferedAmount: number
  /** 1 while open; anything else means a frame sent now would be lost. */
  readonly readyState: number
}

export { systemClock, type Clock, type TimerHandle } from '../clock'

/** Why the server itself ended a connection; decides whether the peer is held for resume. */
export type ServerCloseReason = 'shutdown' | 'evicted' | 'retry' | 'heartbeat' | 'replaced' | 'abuse' | 'oversize'
/** Why a connection ended: the server's reason, or the client's clean close, or a drop (no clean close: network loss). */
export type CloseReason = ServerCloseReason | 'client' | 'dropped'
export const CLOSE_REASONS: readonly CloseReason[] = ['client', 'dropped', 'heartbeat', 'shutdown', 'evicted', 'retry', 'replaced', 'abuse', 'oversize']

/** A session's connection, as the session and the modules that write to its peer see it (connection.ts's Connection). */
export interface SessionConnection {
  readonly ip: string
  readonly transport: Transport
  /** Whether a frame sent now reaches the client. */
  readonly writable: boolean
  /** Ends the connection from the server side (once). */
  end (reason: ServerCloseReason): void
}

export interface HubLimits {
  maxPeers: number
  joinRateLimit: boolean
  ratePerS: number
  rateBurst: number
  abuseMaxDrops: number
  maxBufferedBytes: number
  heartbeatMs: number
  resumeGraceMs: number
  resumeBufferMax: number
  /** Bytes of frames held for a dropped peer (with resumeBufferMax, whichever is reached first). */
  resumeBufferBytes: number
  /** Messages of one connection that may wait behind a join or leave in progress. */
  maxQueued: number
  /** How long a frame for a peer whose instance vanished waits for the peer to reappear (ms). */
  rerouteDeadlineMs: number
  /** An event-loop stall longer than this makes the instance check its sessions' ownership before acting on what it read meanwhile (0: never; a single instance). */
  stallCheckMs: number
  /** Cut off from the registry this long, the instance closes its connections with 1012 so clients resume elsewhere (0: never). */
  evictAfterMs: number
}

export interface SignalingMetrics {
  messageIn (type: string): void
  messageOut (type: string): void
  error (code: ErrorCode): void
  /**
   * From reading a relay to handing it on: to the target's socket (or its
   * buffer) when the target is here ('local'), to the router when the target
   * is on another instance ('remote': the hop there is not included).
   */
  relayLatency (seconds: number, path: 'local' | 'remote'): void
  resume (): void
  /** A frame that reached a peer twice (by two paths during a move) and was dropped the second time. */
  duplicate (): void
  /** A frame re-routed because the instance it was sent to had gone. */
  rerouted (): void
  /** A connection ended, and why. */
  closed (reason: CloseReason): void
  /** A session changed instance: 'in' taken over here (resumed from another instance), 'out' handed to the instance it resumed on. */
  moved (direction: 'in' | 'out'): void
}

/** Events of one socket, forwarded by the transport owner. */
export interface ConnectionHandle {
  message (data: Buffer | string, isBinary: boolean): void
  pong (): void
  /** The socket closed; `code` is what the peer sent (1005 none, 1006 no close frame). */
  closed (code: number): void
  /** The WebSocket layer rejected a frame (oversize, invalid UTF-8) and is closing the socket. */
  protocolError (): void
}
