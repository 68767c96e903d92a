import type { Logger } from './types'

type Level = 'debug' | 'info' | 'warn' | 'error'

/** What a session's log lines are bound to. */
export interface LogBindings {
  readonly peerId: string
  readonly roomId: string | null
}

/*
 * A session's logger: its lines carry its peer id (and room, while it is in
 * one) as a child logger's would, in the same place in the line, but nothing
 * is kept per session: an idle session would otherwise hold a pino child (its
 * bindings string, a logger object and its properties) that most sessions
 * never write to. Made per use; the bindings are read from the session then.
 */
export class SessionLog implements Logger {
  constructor (private readonly base: Logger, private readonly of: LogBindings) {}

  private bindings (): Record<string, unknown> {
    return this.of.roomId === null ? { peerId: this.of.peerId } : { peerId: this.of.peerId, roomId: this.of.roomId }
  }

  child (bindings: Record<string, unknown>): Logger {
    return this.base.child({ ...this.bindings(), ...bindings })
  }

  private write (level: Level, args: unknown[]): void {
    const [first, ...rest] = args
    const log = this.base[level] as (...a: unknown[]) => void
    if (typeof first === 'string') log.call(this.base, this.bindings(), first, ...rest)
    else if (first !== null && typeof first === 'object' && !(first instanceof Error)) log.call(this.base, { ...this.bindings(), ...first }, ...rest)
    // Anything else (an Error first, say) is formatted by a real child, exactly as before.
    else {
      const child = this.base.child(this.bindings())
      ;(child[level] as (...a: unknown[]) => void).apply(child, args)
    }
  }

  debug (...args: unknown[]): void { this.write('debug', args) }
  info (...args: unknown[]): void { this.write('info', args) }
  warn (...args: unknown[]): void { this.write('warn', args) }
  error (...args: unknown[]): void { this.write('error', args) }
}
