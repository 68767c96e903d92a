import { isIP, SocketAddress } from 'node:net'
import fp from 'fastify-plugin'
import { trustProxyOption } from '../config'

/** `[v6]`, `[v6]:port` (RFC 7239 style) and `v4:port` (what some load balancers append). */
const BRACKETED = /^\[([^\]]+)\](?::\d{1,5})?$/
const V4_WITH_PORT = /^([\d.]+):\d{1,5}$/

/**
 * One X-Forwarded-For entry as a bare address, or null when it is not one.
 * IPv6 comes back in its canonical spelling so that `2001:DB8:0::1` and
 * `[2001:db8::1]:443` are one client to every per-IP limit.
 */
export function forwardedAddress (entry: string): string | null {
  const text = entry.trim()
  const bracketed = BRACKETED.exec(text)
  const host = bracketed?.[1] ?? V4_WITH_PORT.exec(text)?.[1] ?? text
  const family = isIP(host)
  if (family === 0 || (bracketed !== null && family !== 6)) return null
  if (family === 4) return host
  try {
    return new SocketAddress({ address: host, family: 'ipv6' }).address
  } catch {
    return null
  }
}

/** The header with every entry that is not an address dropped; undefined when none is left. */
export function sanitizeForwardedFor (header: string | string[]): string | undefined {
  const kept = (Array.isArray(header) ? header.join(',') : header)
    .split(',')
    .map(forwardedAddress)
    .filter((address): address is string => address !== null)
  return kept.length > 0 ? kept.join(', ') : undefined
}

/**
 * With TRUST_PROXY on, Fastify takes X-Forwarded-For entries as they are
 * (proxy-addr checks only the proxies it trusts, not the address it returns),
 * so `X-Forwarded-For: whatever-<n>` would give each request a fresh
 * request.ip and a fresh budget in every per-IP limit: the REST rate limit,
 * MAX_CONNECTIONS_PER_IP and the join limiter. This hook rewrites the header
 * before anything reads request.ip (it is registered ahead of the routes, and
 * app-wide hooks run before the rate limiter's and the /ws route's own), so a
 * junk entry is skipped and request.ip falls back to the next hop, and
 * finally to the socket address. Only the part a client can forge changes:
 * entries a trusted proxy appends are real addresses. Fastify's own
 * "incoming request" log line is written before hooks and still shows the
 * raw value.
 */
export default fp(async (fastify) => {
  if (trustProxyOption(fastify.config.TRUST_PROXY) === false) return
  // Callback style: an async hook costs a promise and a microtask hop per request.
  fastify.addHook('onRequest', (request, _reply, done) => {
    const headers = request.raw.headers
    const header = headers['x-forwarded-for']
    if (header !== undefined) {
      const clean = sanitizeForwardedFor(header)
      if (clean === undefined) delete headers['x-forwarded-for']
      else headers['x-forwarded-for'] = clean
    }
    done()
  })
}, { name: 'forwarded-for', fastify: '5.x', dependencies: ['config'] })
