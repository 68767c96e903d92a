/*
 * Shared by the core and the infrastructure (src/redis, src/store,
 * src/cluster), which never import the core at run time.
 */

/** An expected failure (the store or another instance unreachable) for a log line: what and why, no stack. */
export function brief (err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) }
  const { code } = err as { code?: unknown }
  const cause = err.cause instanceof Error ? err.cause.message : undefined
  return { type: err.name, ...(code !== undefined && { code }), message: err.message, ...(cause !== undefined && { cause }) }
}
