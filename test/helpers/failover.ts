import type { Test } from 'tap'
import { createRoom } from './process'
import { ChurnPeer, describeLost, failureSummary, pairUp, settle, summary, tally, type Tally } from './churn'

/*
 * Streams across instances while Redis fails over (test/sentinel.test.ts,
 * test/redis-cluster.test.ts): pairs of clients, one on each of two
 * instances, stream numbered ICE candidates with ids (`m<seq>`) to each other
 * through the failover, and every message is counted: delivered once and in
 * order, or refused to its sender by id with an allowed code. The clients
 * never reconnect: a Redis failover must not close a WebSocket, so any close
 * shows up in the counts.
 */

export interface Instance { name: string, ws: string, http: string }

export const TICK_MS = 20

/** `count` pairs, each in its own room created on `first`: `a` on `first`, `b` on `second`. Not streaming yet. */
export async function pairsAcross (t: Test, first: Instance, second: Instance, count: number, tag: string): Promise<ChurnPeer[]> {
  const peers: ChurnPeer[] = []
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    const a = new ChurnPeer(`${tag}${i}a`)
    const b = new ChurnPeer(`${tag}${i}b`)
    t.teardown(() => { a.dispose(); b.dispose() })
    peers.push(a, b)
    const roomId = `${tag}-${i}`
    await createRoom(first, roomId)
    if (!await a.connect({ name: first.name, ws: first.ws }) || !await b.connect({ name: second.name, ws: second.ws })) throw new Error(`${roomId}: could not connect`)
    await pairUp(a, b, roomId)
  }))
  return peers
}

/** Stops the streams, waits for what is in flight, counts, and says what it found. */
export async function countStreams (t: Test, peers: ChurnPeer[], label: string, events: Array<{ label: string, at: number }>): Promise<Tally> {
  for (const p of peers) p.stopStreaming()
  await settle(peers)
  const r = tally(peers)
  t.comment(summary(label, r))
  t.comment(failureSummary(r))
  if (r.lost.length > 0) t.comment(`lost: ${describeLost(r.lost, events)}`)
  return r
}

/** When each refused message was sent, relative to `at` (ms), by code: "unavailable -12..2410". */
export function refusalTimes (peers: ChurnPeer[], at: number): string {
  const byCode = new Map<string, number[]>()
  for (const p of peers) {
    for (const [seq, code] of p.refusedWith) {
      const offsets = byCode.get(code) ?? []
      offsets.push((p.sentAt[seq - 1] ?? NaN) - at)
      byCode.set(code, offsets)
    }
  }
  if (byCode.size === 0) return 'none'
  let unknownDelivered = 0
  for (const p of peers) for (const [seq, code] of p.refusedWith) if (code === 'outcome_unknown' && p.partner?.got.has(seq) === true) unknownDelivered++
  return [...byCode].map(([code, offsets]) => {
    offsets.sort((x, y) => x - y)
    const delivered = code === 'outcome_unknown' ? ` (${unknownDelivered} of them delivered)` : ''
    return `${code} ${offsets.length} sent ${offsets[0]}..${offsets.at(-1)} ms${delivered}`
  }).join(', ')
}

export interface FailoverAllowance {
  /** Codes a message may be refused with, by id; no other error may reach a client. */
  codes: string[]
  /** Refusals only for messages sent in this window (ms since epoch): while Redis was failing over. */
  refusedWithin: [number, number]
  minAccepted: number
  /** Every sender had at least this many messages sent after `after` accepted (and, with nothing lost, delivered). */
  minAcceptedAfter: { after: number, count: number }
}

/**
 * Nothing accepted is lost, duplicated or reordered; refusals only by id,
 * with an allowed code, only for messages sent while Redis was failing over,
 * never delivered all the same; no connection closed or failed, nobody heard
 * peer-disconnected; and every pair streams on after the failover.
 */
export function failoverVerdict (t: Test, r: Tally, peers: ChurnPeer[], allowed: FailoverAllowance): void {
  const list = (xs: string[]): string => xs.length === 0 ? 'none' : xs.join(', ')
  t.equal(r.lost.length, 0, 'no accepted message lost')
  t.equal(r.duplicated, 0, 'no message delivered twice')
  t.equal(r.reordered, 0, 'no message delivered after a newer one from the same sender')
  t.equal(r.refusedButDelivered, 0, 'no refused message delivered (outcome_unknown aside)')
  t.same([...r.refused.keys()].filter(code => !allowed.codes.includes(code)), [], `messages refused by id only with: ${list(allowed.codes)}`)
  t.same([...r.errors.keys()].filter(code => !allowed.codes.includes(code)), [], `no other error reached a client (allowed: ${list(allowed.codes)})`)
  const [from, to] = allowed.refusedWithin
  const outside: string[] = []
  for (const p of peers) {
    for (const seq of p.refusedWith.keys()) {
      const at = p.sentAt[seq - 1] ?? NaN
      if (!(at >= from && at <= to)) outside.push(`${p.name} m${seq} at ${at - from} ms`)
    }
  }
  t.same(outside.slice(0, 10), [], `refusals only for messages sent during the failover (${outside.length} outside it)`)
  t.equal(r.peerDisconnected, 0, 'nobody heard peer-disconnected')
  t.equal(r.identityChanges + r.resumes, 0, 'nobody had to reconnect')
  t.same([...r.closeCodes.keys()], [], 'no connection closed')
  t.equal(r.connectFailures, 0, 'no connection failed')
  t.equal(r.foreign + r.garbage + r.notWelcomeFirst, 0, 'no stranger, no garbage, welcome first')
  t.ok(r.accepted >= allowed.minAccepted, `${r.accepted} messages accepted (at least ${allowed.minAccepted})`)
  const { after, count } = allowed.minAcceptedAfter
  const stalled = peers.map(p => {
    let n = 0
    for (let seq = 1; seq <= p.seq; seq++) if ((p.sentAt[seq - 1] ?? 0) > after && !p.refusedWith.has(seq)) n++
    return { name: p.name, n }
  }).filter(x => x.n < count).map(x => `${x.name}:${x.n}`)
  t.same(stalled, [], `every sender had at least ${count} messages accepted after the failover`)
}
