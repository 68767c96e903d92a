import type { Test } from 'tap'
import type { TestRedis } from './redis'
import { createRoom, startServer, type ServerProcess } from './process'
import { ChurnPeer, LiveSet, describeLost, pairUp, settle, summary, tally, type Endpoint, type LostMessage, type Tally } from './churn'

/*
 * The fleet-fault scenarios (test/faults-*.test.ts): three real server
 * processes on one real redis-server, pairs of clients streaming numbered
 * candidates with ids, and clients that notice a dead link like a careful
 * app (app-level ping every 500 ms, no pong within 2 s: drop it and resume
 * on another instance).
 */

export const FAULT_SETTINGS = {
  RESUME_GRACE_MS: 6000,
  INSTANCE_DEAD_AFTER_MS: 3000,
  HEARTBEAT_MS: 1000
}
export const PING = { everyMs: 500, timeoutMs: 2000 }
const TICK_MS = 20

export interface FleetNode extends Endpoint { server: ServerProcess, http: string }

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** One server process of the fleet; `redisUrl` lets a test put a proxy between it and Redis. */
export async function startFleetNode (t: Test, redis: TestRedis, name: string, env: Record<string, string> = {}): Promise<FleetNode> {
  const server = await startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: name,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    WS_RATE_PER_S: '2000',
    WS_RATE_BURST: '2000',
    // The clients stand for different users; here they all come from 127.0.0.1.
    MAX_CONNECTIONS_PER_IP: '1000',
    RESUME_GRACE_MS: String(FAULT_SETTINGS.RESUME_GRACE_MS),
    INSTANCE_DEAD_AFTER_MS: String(FAULT_SETTINGS.INSTANCE_DEAD_AFTER_MS),
    HEARTBEAT_MS: String(FAULT_SETTINGS.HEARTBEAT_MS),
    LOG_LEVEL: 'info',
    ...env
  })
  return { name, ws: server.ws, http: server.http, server }
}

/** `pairs` pairs, pair i with one peer on node i and the other on node i + 1 (mod the fleet). */
export async function streamingPairs (t: Test, nodes: FleetNode[], pairs: number, tag: string): Promise<ChurnPeer[]> {
  const live = new LiveSet(nodes)
  const at = (i: number): FleetNode => nodes[i % nodes.length] as FleetNode
  const peers: ChurnPeer[] = []
  await Promise.all(Array.from({ length: pairs }, async (_, i) => {
    const a = new ChurnPeer(`p${i}a`, { live, ping: PING })
    const b = new ChurnPeer(`p${i}b`, { live, ping: PING })
    t.teardown(() => { a.dispose(); b.dispose() })
    peers.push(a, b)
    const roomId = `${tag}-${i}`
    await createRoom(at(i), roomId)
    if (!await a.connect(at(i)) || !await b.connect(at(i + 1))) throw new Error(`${roomId}: could not connect`)
    await pairUp(a, b, roomId)
  }))
  for (const p of peers) p.startStreaming(TICK_MS)
  return peers
}

/** Stops the streams, waits for what is in flight, and counts. */
export async function stopAndCount (t: Test, peers: ChurnPeer[], label: string, events: Array<{ label: string, at: number }>, excuse?: (m: LostMessage) => boolean): Promise<Tally> {
  for (const p of peers) p.stopStreaming()
  await settle(peers)
  const r = tally(peers, excuse)
  t.comment(summary(label, r))
  if (r.lost.length > 0) t.comment(`lost: ${describeLost(r.lost, events)}`)
  return r
}

/**
 * What every fault scenario must show: nothing accepted is lost, duplicated
 * or reordered; a refusal names its message's id, only with a code in
 * `allowed`, and a refused message is never delivered; nobody hears
 * peer-disconnected; every identity is kept.
 */
export function faultVerdict (t: Test, r: Tally, allowed: string[], minAccepted: number): void {
  t.equal(r.lost.length, 0, 'no accepted message lost')
  t.equal(r.duplicated, 0, 'no message delivered twice')
  t.equal(r.reordered, 0, 'no message delivered after a newer one from the same sender')
  t.equal(r.refusedButDelivered, 0, 'no refused message delivered')
  t.same([...r.refused.keys()].filter(code => !allowed.includes(code)), [], `refusals only with ${allowed.join(', ')}`)
  t.same([...r.errors.keys()].filter(code => !allowed.includes(code)), [], 'no other error reached a client')
  t.equal(r.peerDisconnected, 0, 'nobody heard peer-disconnected')
  t.equal(r.identityChanges, 0, 'every identity kept')
  t.equal(r.foreign + r.garbage + r.notWelcomeFirst, 0, 'no stranger, no garbage, welcome first')
  t.ok(r.accepted >= minAccepted, `${r.accepted} messages accepted (at least ${minAccepted})`)
}

/** Each of `moved` resumed on another instance than `from`, within `withinMs` of `since`. */
export function movedAway (t: Test, moved: ChurnPeer[], from: string, since: number, withinMs: number): void {
  for (const p of moved) {
    const next = p.conns.find(c => c.server !== from && c.openedAt > since)
    t.ok(next?.resumed === true, `${p.name} resumed on another instance`)
    if (next !== undefined) t.ok(next.openedAt - since < withinMs, `${p.name} moved ${next.openedAt - since} ms after the fault (bound ${withinMs})`)
  }
}
