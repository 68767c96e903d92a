import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from './client'
import type { RedisLink } from './link'
import { redisKeys } from './keys'
import { scriptCaller } from './script'
import { admitConnection } from './scripts'
import { brief } from '../brief'

/*
 * MAX_CONNECTIONS_PER_IP across the fleet (Redis mode). Each instance keeps
 * its share per client IP (its open connections and the sessions it holds
 * for that IP's resume) in `conns:<ip>`; an upgrade is admitted when the
 * shares of the instances alive at the last heartbeat, with this one's, stay
 * under the cap. A crashed instance's share stops counting once it is no
 * longer seen alive (INSTANCE_DEAD_AFTER_MS), and lapses with the key's TTL.
 *
 * Cost: one round trip at an upgrade (the check writes this instance's new
 * share in the same script), one when a connection closes or a held session
 * ends (batched per event-loop turn and IP), nothing per message. While Redis
 * cannot be asked, the per-instance cap (checked first, always) is the limit.
 */

export interface ConnectionCapDeps {
  redis: RedisClient
  link: RedisLink
  keyPrefix: string
  node: string
  max: number
  /** How long a share outlives its last write (it is rewritten on every change). */
  ttlS: number
  /** Instances seen alive at the last heartbeat. */
  liveNodes: () => readonly string[]
  /** This instance's count for an IP (connections and held sessions), without the one a resume token takes back. */
  localCount: (ip: string, resumeToken?: string) => number
  /** Which live instance holds the session a resume token names, if any (its share gives one back). */
  heldElsewhere?: (resumeToken: string) => Promise<string | null>
  log: FastifyBaseLogger
}

/** How often shares are compared with the live counts (a held session whose grace ran out). */
const SWEEP_MS = 2000

export function createConnectionCap (deps: ConnectionCapDeps) {
  const { redis } = deps
  const call = scriptCaller(redis, [admitConnection])
  const keys = redisKeys(deps.keyPrefix)
  /** The share last written per IP (IPs with none written are absent). */
  const written = new Map<string, number>()
  const dirty = new Set<string>()
  let flushScheduled = false
  let timer: NodeJS.Timeout | null = null

  function flush (): void {
    flushScheduled = false
    const ips = [...dirty]
    dirty.clear()
    for (const ip of ips) {
      const count = deps.localCount(ip)
      if (written.get(ip) === count) continue
      const key = keys.connectionsKey(ip)
      deps.link.run(async () => {
        if (count === 0) await redis.hdel(key, deps.node)
        else await redis.multi().hset(key, deps.node, count).expire(key, deps.ttlS).exec()
      }).then(() => {
        if (count === 0) written.delete(ip)
        else written.set(ip, count)
      }, () => { /* the next change or sweep writes it; meanwhile others may count a stale share */ })
    }
  }

  return {
    /**
     * Whether one more connection from `ip` fits under the fleet-wide cap.
     * The per-instance cap has been checked already. Answers true when Redis
     * cannot be asked (the per-instance cap is the fallback).
     */
    async admit (ip: string, resumeToken?: string): Promise<boolean> {
      if (!deps.link.healthy) return true
      const mine = deps.localCount(ip, resumeToken) + 1
      try {
        const discounted = resumeToken === undefined || deps.heldElsewhere === undefined ? '' : (await deps.heldElsewhere(resumeToken)) ?? ''
        const others = await deps.link.run(() => call(admitConnection, { conns: keys.connectionsKey(ip) },
          { self: deps.node, cap: deps.max, mine, ttl: deps.ttlS, discounted, live: deps.liveNodes(), deadline: deps.link.deadline() }))
        if (others >= 0) return false
        written.set(ip, mine)
        return true
      } catch (err) {
        deps.log.debug({ error: brief(err) }, 'fleet-wide connection cap not checked (Redis not answering); the per-instance cap applies')
        return true
      }
    },

    /** The count of `ip` here may have changed (a connection closed): its share is rewritten if it did. */
    changed (ip: string): void {
      dirty.add(ip)
      if (!flushScheduled) {
        flushScheduled = true
        setImmediate(flush)
      }
    },

    start (): () => void {
      timer = setInterval(() => {
        for (const ip of written.keys()) dirty.add(ip)
        flush()
      }, SWEEP_MS)
      timer.unref()
      return () => { if (timer !== null) clearInterval(timer) }
    }
  }
}

export type ConnectionCap = ReturnType<typeof createConnectionCap>
