import t, { type Test } from 'tap'
import { startServer, type ServerProcess } from './helpers/process'
import { startRedis } from './helpers/redis'
import { TestClient } from './helpers/ws'
import { STORE_MODES, until, type StoreMode } from './helper'

/*
 * Faults around held sessions (docs/protocol.md §3.5, shared spec §5), on
 * real server processes (node dist/server.js; npm run build first):
 *   - held sessions count toward MAX_CONNECTIONS_PER_IP (a resume replaces one),
 *   - RESUME_BUFFER_MAX and RESUME_BUFFER_BYTES bound what is held on every
 *     path (a dropped peer, a slow reader),
 *   - the replay on resume follows the socket's backpressure and delivers
 *     everything held, without cutting the resumed connection.
 */

type Env = Record<string, string>

/** A server on the given store (memory: none; redis: a real redis-server, own key prefix). */
async function serve (t: Test, mode: StoreMode, env: Env): Promise<ServerProcess> {
  const store: Env = {}
  if (mode === 'redis') {
    const redis = await startRedis(t)
    store['REDIS_URL'] = redis.url
    store['KEY_PREFIX'] = redis.prefix
  }
  return await startServer(t, { LOG_LEVEL: 'warn', DISABLE_JOIN_RATE_LIMIT: 'true', ...store, ...env })
}

/** The server's Prometheus gauges and counters without labels (/metrics on the main port outside production). */
async function gauges (server: ServerProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`${server.http}/metrics`)).text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^(privydrop_\w+) (\S+)$/gm)) out[m[1] as string] = Number(m[2])
  return out
}

/** Waits until the server's connection and session gauges read these values; returns the last reading. */
async function settle (server: ServerProcess, want: { connections: number, sessions: number }, timeoutMs = 5000): Promise<{ connections?: number, sessions?: number }> {
  let last: { connections?: number, sessions?: number } = {}
  await until(async () => {
    const g = await gauges(server)
    last = { connections: g['privydrop_ws_connections'], sessions: g['privydrop_ws_sessions'] }
    return last.connections === want.connections && last.sessions === want.sessions
  }, timeoutMs, 25)
  return last
}

async function createRoom (server: ServerProcess, roomId: string): Promise<void> {
  const res = await fetch(`${server.http}/api/create_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId }) })
  if (!res.ok) throw new Error(`create_room ${res.status}`)
}

async function join (client: TestClient, roomId: string): Promise<void> {
  const res = await client.request('join', { roomId }, 'joinResponse')
  if (res.data.success !== true) throw new Error(`join failed: ${JSON.stringify(res.data)}`)
}

/** A client that records the byte size of every frame it receives, from the first one on. */
class SizedClient extends TestClient {
  readonly sizes: number[] = []
  constructor (url: string) {
    super(url)
    this.ws.on('message', (raw: Buffer) => { this.sizes.push(raw.length) })
  }
}

/** Opens a client and waits for its welcome; terminated in teardown. */
async function open (t: Test, url: string): Promise<SizedClient> {
  const client = new SizedClient(url)
  t.teardown(() => { client.ws.terminate() })
  await client.opened
  await client.next('welcome')
  return client
}

/** The HTTP status an upgrade was answered with: 101 when accepted (the socket is then dropped), else the refusal's status. */
async function upgradeStatus (url: string): Promise<number | undefined> {
  const client = new TestClient(url)
  try {
    await client.opened
  } catch (err) {
    return (err as { statusCode?: number }).statusCode
  }
  client.ws.terminate()
  return 101
}

const resumeUrl = (server: ServerProcess, token: string) => `${server.ws}?resume=${encodeURIComponent(token)}`

/** Pauses or resumes reading from the client's TCP socket (a slow reader). */
function socketOf (client: TestClient): { pause: () => void, resume: () => void } {
  return (client.ws as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
}

/** An offer whose SDP carries its index, padded to `size` characters. */
function offer (i: number, size = 0): { type: string, sdp: string } {
  const head = `v=0 #${i}#`
  return { type: 'offer', sdp: head + 'x'.repeat(Math.max(0, size - head.length)) }
}
const indexOf = (f: { data: any }): number => Number(/#(\d+)#/.exec(String(f.data.offer?.sdp))?.[1] ?? -1)
const ascending = (xs: number[]): boolean => xs.every((x, i) => i === 0 || x > (xs[i - 1] as number))
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** The ids of the peer_not_found errors a sender received, as indexes (ids are `o<i>`). */
const refusedIndexes = (sender: TestClient): number[] =>
  sender.all('error').filter(f => f.data.code === 'peer_not_found').map(f => Number(String(f.id).slice(1))).sort((a, b) => a - b)

/** A request/reply round trip: the server has processed everything this client sent before it. */
async function roundTrip (client: TestClient): Promise<void> {
  const reply = await client.request('ping', {}, 'pong')
  if (reply.type !== 'pong') throw new Error(`ping answered with ${reply.type}`)
}

// --- 1. held sessions count toward MAX_CONNECTIONS_PER_IP -----------------------------------

for (const mode of STORE_MODES) {
  t.test(`held sessions count toward MAX_CONNECTIONS_PER_IP; a resume replaces one (${mode} store)`, async (t) => {
    const server = await serve(t, mode, { MAX_CONNECTIONS_PER_IP: '3', RESUME_GRACE_MS: '60000' })
    await createRoom(server, 'cap')
    const dropped: TestClient[] = []
    for (let i = 0; i < 3; i++) {
      const c = await open(t, server.ws)
      await join(c, 'cap')
      dropped.push(c)
    }
    for (const c of dropped) c.drop()
    t.same(await settle(server, { connections: 0, sessions: 3 }), { connections: 0, sessions: 3 }, 'the three dropped peers are held, none connected')

    t.equal(await upgradeStatus(server.ws), 429, 'a 4th plain connection from the same IP is refused before the upgrade (3 held sessions count)')
    // A wrongly accepted upgrade above is gone again before the next check.
    await settle(server, { connections: 0, sessions: 3 })

    const first = dropped[0] as TestClient
    const resumed = new TestClient(resumeUrl(server, first.token))
    t.teardown(() => { resumed.ws.terminate() })
    const accepted = await resumed.opened.then(() => true, (err: { statusCode?: number }) => {
      t.fail(`a resume of a held session was refused with HTTP ${err.statusCode}`)
      return false
    })
    if (!accepted) return
    t.equal((await resumed.next('welcome')).data.peerId, first.peerId, 'the resume is accepted and keeps its peerId')
    t.same(await settle(server, { connections: 1, sessions: 3 }), { connections: 1, sessions: 3 }, 'the resume replaced a held session rather than adding one')

    t.equal(await upgradeStatus(server.ws), 429, 'still at the cap: 1 connected + 2 held')
    await resumed.close()
    await settle(server, { connections: 0, sessions: 2 })
    t.equal(await upgradeStatus(server.ws), 101, 'a clean close ends a session and frees its slot')
  })
}

t.test('sessions that never joined a room are not held and do not count toward MAX_CONNECTIONS_PER_IP', async (t) => {
  const server = await serve(t, 'memory', { MAX_CONNECTIONS_PER_IP: '3', RESUME_GRACE_MS: '60000' })
  for (let i = 0; i < 10; i++) {
    const c = await open(t, server.ws)
    c.drop()
  }
  t.same(await settle(server, { connections: 0, sessions: 0 }), { connections: 0, sessions: 0 }, 'nothing held')
  t.equal(await upgradeStatus(server.ws), 101, 'a plain connection is still accepted')
})

// --- 2. RESUME_BUFFER_MAX and RESUME_BUFFER_BYTES bound held frames -------------------------

/** Two peers in a room; B dropped (1006) and held. */
async function heldPair (t: Test, server: ServerProcess, roomId: string) {
  await createRoom(server, roomId)
  const a = await open(t, server.ws)
  const b = await open(t, server.ws)
  await join(a, roomId)
  await join(b, roomId)
  b.drop()
  await settle(server, { connections: 1, sessions: 2 })
  return { a, b }
}

/** Resumes B and waits until a marker offer from A, sent after the resume, arrives behind the replay. */
async function resumeAndCollect (t: Test, server: ServerProcess, a: TestClient, b: TestClient, marker: number) {
  const b2 = await open(t, resumeUrl(server, b.token))
  t.equal(b2.peerId, b.peerId, 'B resumed with its peerId')
  a.send('offer', { peerId: b.peerId, offer: offer(marker) }, `o${marker}`)
  const arrived = await until(() => b2.all('offer').some(f => indexOf(f) === marker), 5000)
  t.ok(arrived, 'a live offer sent after the resume arrives behind the replay')
  const offers = b2.all('offer').map(indexOf)
  const replayed = offers.slice(0, offers.indexOf(marker) < 0 ? offers.length : offers.indexOf(marker))
  // Frame sizes in arrival order: index 0 is the welcome, then the replay.
  const replayBytes = b2.sizes.slice(1, 1 + replayed.length).reduce((n, s) => n + s, 0)
  return { b2, replayed, replayBytes }
}

for (const mode of STORE_MODES) {
  t.test(`RESUME_BUFFER_MAX: a held peer keeps the oldest 16 frames, the newest 8 are refused (${mode} store)`, async (t) => {
    const server = await serve(t, mode, { RESUME_GRACE_MS: '60000', RESUME_BUFFER_MAX: '16' })
    const { a, b } = await heldPair(t, server, 'bufmax')
    for (let i = 1; i <= 24; i++) a.send('offer', { peerId: b.peerId, offer: offer(i) }, `o${i}`)
    await roundTrip(a)
    t.same(refusedIndexes(a), range(17, 24), 'A hears peer_not_found for exactly the last 8 ids')
    const { replayed } = await resumeAndCollect(t, server, a, b, 99)
    t.same(replayed, range(1, 16), 'B gets offers 1..16 on resume, in order')
  })

  t.test(`RESUME_BUFFER_BYTES: held frames are bounded in bytes, newest refused (${mode} store)`, async (t) => {
    const server = await serve(t, mode, {
      RESUME_GRACE_MS: '60000',
      RESUME_BUFFER_MAX: '1000',
      RESUME_BUFFER_BYTES: '65536',
      WS_RATE_PER_S: '10000',
      WS_RATE_BURST: '10000'
    })
    const { a, b } = await heldPair(t, server, 'bufbytes')
    const sent = 12
    for (let i = 1; i <= sent; i++) a.send('offer', { peerId: b.peerId, offer: offer(i, 10_000) }, `o${i}`)
    await roundTrip(a)
    const { replayed, replayBytes } = await resumeAndCollect(t, server, a, b, 99)
    t.same(replayed, range(1, replayed.length), `the replay is a gap-free prefix of what was sent (${replayed.length} frames)`)
    t.ok(replayBytes <= 65536, `the replayed frames total at most RESUME_BUFFER_BYTES (${replayBytes} bytes in ${replayed.length} frames)`)
    t.equal(replayed.length, 6, 'six ~10 KB frames fit in 64 KiB, a seventh does not')
    t.same(refusedIndexes(a), range(replayed.length + 1, sent), `A hears peer_not_found for the rest (${refusedIndexes(a).length} refused)`)
  })
}

t.test('slow reader: kept connected, what waits for it bounded by RESUME_BUFFER_MAX, refusals reported, every accepted frame delivered once', async (t) => {
  const server = await serve(t, 'memory', {
    RESUME_GRACE_MS: '60000',
    RESUME_BUFFER_MAX: '16',
    WS_MAX_BUFFERED_BYTES: '65536',
    WS_RATE_PER_S: '100000',
    WS_RATE_BURST: '100000'
  })
  await createRoom(server, 'slowbuf')
  const a = await open(t, server.ws)
  const b = await open(t, server.ws)
  await join(a, 'slowbuf')
  await join(b, 'slowbuf')
  socketOf(b).pause() // B stops reading: the kernel buffers fill, then the server's

  // Offers of ~20 KB in batches until the server refuses some: B's socket and
  // then its 16-frame buffer are full.
  let sent = 0
  const sendOffers = (n: number) => {
    for (let i = 0; i < n; i++) {
      sent++
      a.send('offer', { peerId: b.peerId, offer: offer(sent, 20_000) }, `o${sent}`)
    }
  }
  const full = await until(async () => {
    sendOffers(20)
    await roundTrip(a)
    return refusedIndexes(a).length > 0
  }, 15_000, 0)
  t.ok(full, `the server refused offers once B's buffers were full (after ${sent})`)
  sendOffers(40)
  await roundTrip(a)
  const refused = refusedIndexes(a)
  t.ok(refused.length >= 40, `A heard peer_not_found for what did not fit (${refused.length} of ${sent})`)
  t.equal((await gauges(server))['privydrop_ws_connections'], 2, 'B was not cut: that would throw away what its socket held')

  socketOf(b).resume()
  const accepted = range(1, sent).filter(i => !refused.includes(i))
  t.ok(await until(() => b.all('offer').length >= accepted.length, 15_000), `everything accepted arrives once B reads (${b.all('offer').length} of ${accepted.length})`)
  const received = b.all('offer').map(indexOf)
  t.ok(ascending(received), 'in order')
  t.same(received, accepted, 'exactly the accepted frames, each once')
})

// --- 3. replay with backpressure ------------------------------------------------------------

t.test('replay on resume follows backpressure: 256 frames of ~60 KB reach a slow reader, in order, no disconnect', async (t) => {
  const server = await serve(t, 'memory', {
    RESUME_GRACE_MS: '60000',
    RESUME_BUFFER_MAX: '256',
    RESUME_BUFFER_BYTES: '33554432',
    WS_MAX_BUFFERED_BYTES: '1048576',
    MAX_MESSAGE_BYTES: '131072',
    WS_RATE_PER_S: '100000',
    WS_RATE_BURST: '100000'
  })
  const { a, b } = await heldPair(t, server, 'replay')
  const count = 256
  for (let i = 1; i <= count; i++) a.send('offer', { peerId: b.peerId, offer: offer(i, 60_000) }, `o${i}`)
  await roundTrip(a)
  t.same(refusedIndexes(a), [], 'all 256 are accepted for the held peer')

  // B resumes but reads nothing for a second: the replay must wait for the socket to drain.
  const b2 = new TestClient(resumeUrl(server, b.token))
  t.teardown(() => { b2.ws.terminate() })
  b2.ws.once('open', () => socketOf(b2).pause())
  let closedEarly: { code: number } | null = null
  b2.closed.then((c) => { closedEarly = c }, () => {})
  await b2.opened
  await new Promise(resolve => setTimeout(resolve, 1000)) // the slow reader's pause itself, not a synchronisation
  socketOf(b2).resume()
  t.equal((await b2.next('welcome')).data.peerId, b.peerId, 'B resumed')

  const all = await until(() => b2.all('offer').length >= count || closedEarly !== null, 15_000)
  t.ok(all, 'the replay finished or the connection ended')
  const got = b2.all('offer').map(indexOf)
  t.equal(closedEarly, null, `the resumed connection was not cut (closed with ${JSON.stringify(closedEarly)} after ${got.length} frames)`)
  t.equal(got.length, count, `all ${count} held frames arrived (${got.length})`)
  t.ok(got.every((index, i) => index === i + 1), 'in the order sent, without a gap')
  if (closedEarly !== null) return
  await roundTrip(b2)
  t.equal(b2.all('offer').length, count, 'nothing more arrived')
})
