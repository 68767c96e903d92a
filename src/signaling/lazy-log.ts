import type { Logger } from './types'

type Level = 'debug' | 'info' | 'warn' | 'error'
type LogCall = (...args: unknown[]) => void

/**
 * A child logger that is built only when something is written through it at
 * a level the parent writes: most sessions log nothing above the configured
 * level, and a pino child costs about a microsecond and an object each time
 * a session is created or changes room. What it writes is exactly what
 * `parent.child(bindings)` would write.
 */
export class LazyLogger implements Logger {
  private built: Logger | null = null

  constructor (private readonly parent: Logger, private readonly bindings: Record<string, unknown>) {}

  private get target (): Logger {
    this.built ??= this.parent.child(this.bindings)
    return this.built
  }

  private enabled (level: Level): boolean {
    const check = (this.parent as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled
    return typeof check !== 'function' || check.call(this.parent, level)
  }

  child (bindings: Record<string, unknown>): Logger {
    return this.target.child(bindings)
  }

  debug (...args: unknown[]): void {
    if (this.enabled('debug')) (this.target.debug as LogCall).apply(this.target, args)
  }

  info (...args: unknown[]): void {
    if (this.enabled('info')) (this.target.info as LogCall).apply(this.target, args)
  }

  warn (...args: unknown[]): void {
    if (this.enabled('warn')) (this.target.warn as LogCall).apply(this.target, args)
  }

  error (...args: unknown[]): void {
    if (this.enabled('error')) (this.target.error as LogCall).apply(this.target, args)
  }
}
