import t, { type Test } from 'tap'
import { startRedis, type TestRedis } from './helpers/redis'
import { OFFER, createRoom, handshakeAcross, startServer, type ServerProcess } from './helpers/process'
import { connect, join } from './helpers/ws'
import { flushPath } from './helpers/markers'
import { until } from './helper'

/*
 * Real server processes (node dist/server.js) on one real redis-server.
 * Each test starts its own Redis so faults (SIGKILL, Redis stop) stay local.
 */

async function cluster (t: Test, count: number, env: Record<string, string> = {}): Promise<{ redis: TestRedis, servers: ServerProcess[] }> {
  const redis = await startRedis(t, { own: true })
  const servers = await Promise.all(Array.from({ length: count }, (_, i) => startServer(t, {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    INSTANCE_ID: `node${i + 1}`,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    LOG_LEVEL: 'warn',
    ...env
  })))
  return { redis, servers }
}

t.test('a full session between peers on two instances', async (t) => {
  const { servers: [s1, s2] } = await cluster(t, 2)
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  const { a, b } = await handshakeAcross(t, s1, s2, 'x-room')
  a.send('ice-candidate', { peerId: b.peerId, candidate: null })
  t.same((await b.next('ice-candidate')).data, { candidate: null, peerId: a.peerId, from: a.peerId })
  a.send('initiator-online', { roomId: 'x-room' })
  t.same((await b.next('initiator-online')).data, { roomId: 'x-room' })
  b.send('recipient-ready', { roomId: null })
  t.same((await a.next('recipient-ready')).data, { peerId: b.peerId })

  const left = await b.request('leave', { roomId: 'x-room' }, 'leaveResponse')
  t.same(left.data, { success: true, roomId: 'x-room' })
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId }, 'leave crosses instances')
  await join(b, 'x-room')
  await a.next('ready')
  await b.close()
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId }, 'a clean close crosses instances')
  t.equal(a.all('error').length, 0)
})

t.test('1000 candidates across instances arrive in order, batched (instance protocol 2: a few script calls, one payload each); a local relay touches Redis not at all', async (t) => {
  const { redis, servers: [s1, s2] } = await cluster(t, 2, { WS_RATE_PER_S: '10000', WS_RATE_BURST: '10000' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  await createRoom(s1, 'order')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  const c = await connect(t, s1.ws)
  await join(a, 'order')
  await join(b, 'order')
  await join(c, 'order')
  // The joins are settled once their readies are in: each join's news to the
  // other instance and its ready there go out in that order on one connection,
  // so b's ready at a and c's ready at b were published after everything else.
  await a.next('ready')
  await a.next('ready')
  await b.next('ready')

  // Both instances speak instance protocol 2 once each has read the other's
  // advertisement: both entries written, then a heartbeat of each after that
  // (a beat writes its score, then reads the advertisements).
  t.ok(await until(async () => Object.keys(await redis.client.hgetall(`${redis.prefix}instance-protocols`)).length === 2, 10_000), 'both advertise')
  const seenAt = Date.now()
  t.ok(await until(async () => {
    const scores = await redis.client.zrange(`${redis.prefix}instances`, 0, -1, 'WITHSCORES')
    return scores.length === 4 && Number(scores[1]) >= seenAt && Number(scores[3]) >= seenAt
  }, 10_000), 'and each has beaten since')

  const commands = async () => {
    const info = await redis.client.info('commandstats')
    const calls: Record<string, number> = {}
    for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) calls[m[1] as string] = Number(m[2])
    return calls
  }
  const before = await commands()
  for (let i = 0; i < 1000; i++) a.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: `candidate:${i}` } })
  t.ok(await until(() => b.all('ice-candidate').length === 1000, 10_000), 'all 1000 arrived')
  const got = b.all('ice-candidate').map(f => Number(String(f.data.candidate.candidate).split(':')[1]))
  t.same(got, Array.from({ length: 1000 }, (_, i) => i), 'in the order sent')
  const afterCross = await commands()
  // Frames read in one event-loop turn leave in one script call per target
  // instance, and (protocol 2) in one payload: one PUBLISH per script call.
  const publishes = (afterCross['publish'] ?? 0) - (before['publish'] ?? 0)
  const scripts = ['evalsha', 'eval'].reduce((n, cmd) => n + (afterCross[cmd] ?? 0) - (before[cmd] ?? 0), 0)
  t.ok(scripts < 500, `the 1000 relays went out in ${scripts} script calls`)
  t.ok(publishes >= 4 && publishes <= scripts, `in ${publishes} PUBLISHes: one batched payload per call (at most 256 messages each)`)

  for (let i = 0; i < 500; i++) a.send('ice-candidate', { peerId: c.peerId, candidate: null })
  t.ok(await until(() => c.all('ice-candidate').length === 500, 10_000))
  const afterLocal = await commands()
  const delta = Object.entries(afterLocal).reduce((n, [cmd, calls]) => n + calls - (afterCross[cmd] ?? 0), 0)
  // Only background work (heartbeats, the INFO call itself) may show up: nothing per message.
  t.ok(delta < 20, `same-instance relays touched Redis ${delta} times for 500 messages (background only)`)
})

t.test('a room spread over three instances: broadcasts and disconnects reach everyone, no cross-room relay', async (t) => {
  const { servers } = await cluster(t, 3)
  const [s1, s2, s3] = servers
  if (s1 === undefined || s2 === undefined || s3 === undefined) throw new Error('three servers expected')
  await createRoom(s2, 'tri')
  await createRoom(s3, 'other')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  const c = await connect(t, s3.ws)
  const stranger = await connect(t, s3.ws)
  const strangerFar = await connect(t, s1.ws)
  await join(a, 'tri')
  await join(b, 'tri')
  await join(c, 'tri')
  await join(stranger, 'other')
  await join(strangerFar, 'other')
  // Two senders on two instances: the contract orders messages per sender, not across senders.
  const heardByA = [(await a.next('ready')).data.peerId, (await a.next('ready')).data.peerId]
  t.same(heardByA.sort(), [b.peerId, c.peerId].sort(), 'a hears both joins')
  t.same((await b.next('ready')).data, { peerId: c.peerId })

  a.send('initiator-online', { roomId: 'tri' })
  t.same((await b.next('initiator-online')).data, { roomId: 'tri' })
  t.same((await c.next('initiator-online')).data, { roomId: 'tri' })

  for (const target of [a, b]) {
    const res = await stranger.request('offer', { peerId: target.peerId, offer: OFFER }, 'error')
    t.equal(res.data.code, 'peer_not_found', 'no relay into another room, on any instance')
  }
  const far = await strangerFar.request('offer', { peerId: c.peerId, offer: OFFER }, 'error')
  t.equal(far.data.code, 'peer_not_found')
  // A forged target that exists on another instance (s3) but in another room.
  const forged = await a.request('offer', { peerId: stranger.peerId, offer: OFFER }, 'error')
  t.equal(forged.data.code, 'peer_not_found', 'no relay to a peer of another room on another instance')

  // Markers on the refused paths, across the same instances, once the
  // strangers are in the room: what the refused messages and a's broadcast
  // delivered would be in before them.
  for (const s of [stranger, strangerFar]) {
    t.equal((await s.request('leave', { roomId: 'other' }, 'leaveResponse')).data.success, true)
    await join(s, 'tri')
  }
  // s1 routes to stranger once it has heard where it is served; stranger's ready comes after that news.
  t.ok(await until(() => a.all('ready').some(f => f.data.peerId === stranger.peerId)), 'a heard stranger join')
  await flushPath(stranger, a) // s3 → s1
  await flushPath(stranger, b) // s3 → s2
  await flushPath(strangerFar, c) // s1 → s3
  await flushPath(a, stranger) // s1 → s3
  await flushPath(a, strangerFar) // on s1
  for (const x of [a, b, c, stranger]) t.equal(x.all('offer').length, 0, 'no relay reached a peer of another room')
  t.equal(stranger.all('initiator-online').length + strangerFar.all('initiator-online').length, 0, 'the other room did not hear the broadcast')

  await c.close()
  t.same((await a.next('peer-disconnected')).data, { peerId: c.peerId })
  t.same((await b.next('peer-disconnected')).data, { peerId: c.peerId })
})

t.test('a target leaving while relays to it are in flight: each relay is delivered or refused to its sender, never silently lost', async (t) => {
  const { servers: [s1, s2] } = await cluster(t, 2, { WS_RATE_PER_S: '10000', WS_RATE_BURST: '10000' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  await createRoom(s1, 'race')
  const sender = await connect(t, s1.ws)
  const target = await connect(t, s2.ws)
  await join(sender, 'race')
  await join(target, 'race')
  await sender.next('ready')
  // The target's instance decides: relays that reach it after the leave are
  // refused there (or, once the sender's instance heard of the leave, at once).
  const total = 200
  for (let i = 0; i < total; i++) {
    if (i === total / 4) target.send('leave', { roomId: 'race' })
    sender.send('ice-candidate', { peerId: target.peerId, candidate: { candidate: `c:${i}` } }, `m${i}`)
  }
  const accounted = () => target.all('ice-candidate').length + sender.all('error').length
  t.ok(await until(() => accounted() === total, 10_000), `all ${total} relays accounted for (${accounted()})`)
  t.ok(sender.all('error').every(f => f.data.code === 'peer_not_found' && /^m\d+$/.test(f.id ?? '')), 'refusals are peer_not_found with the relay\'s id')
  const delivered = target.all('ice-candidate').map(f => Number(String(f.data.candidate.candidate).slice(2)))
  const refused = sender.all('error').map(f => Number(String(f.id).slice(1)))
  t.same([...delivered, ...refused].sort((x, y) => x - y), Array.from({ length: total }, (_, i) => i), 'every relay exactly once: delivered or refused')
  t.ok(delivered.every((seq, i) => i === 0 || seq > (delivered[i - 1] ?? -1)), 'delivered ones in order')
  t.comment(`leave racing ${total} relays: ${delivered.length} delivered before the leave, ${refused.length} refused`)
})

t.test('SIGKILL: survivors hear peer-disconnected within the bound, dead peers leave the room, resume works elsewhere', async (t) => {
  const deadAfter = 1500
  const grace = 1500
  const { servers: [s1, s2, s3] } = await cluster(t, 3, { INSTANCE_DEAD_AFTER_MS: String(deadAfter), RESUME_GRACE_MS: String(grace) })
  if (s1 === undefined || s2 === undefined || s3 === undefined) throw new Error('three servers expected')
  await createRoom(s1, 'kill')
  const a = await connect(t, s1.ws)
  const victim = await connect(t, s2.ws)
  const resumer = await connect(t, s2.ws)
  await join(a, 'kill')
  await join(victim, 'kill')
  await join(resumer, 'kill')

  const killedAt = Date.now()
  s2.child.kill('SIGKILL')
  await victim.closed
  // The resumer comes back on another instance inside the grace; the victim does not.
  const resumed = await connect(t, `${s3.ws}?resume=${encodeURIComponent(resumer.token)}`)
  t.equal(resumed.peerId, resumer.peerId, 'identity kept across instances')
  t.not(resumed.token, resumer.token, 'token rotated')

  const gone = await a.next('peer-disconnected', deadAfter + grace + 5000)
  const elapsed = Date.now() - killedAt
  t.same(gone.data, { peerId: victim.peerId })
  t.ok(elapsed <= deadAfter * 2 + grace + 1000, `peer-disconnected ${elapsed} ms after SIGKILL (dead after ${deadAfter} + grace ${grace})`)
  t.comment(`SIGKILL → peer-disconnected: ${elapsed} ms`)

  // The departures were reported by the instance that ended the dead one's
  // sessions (s1 or s3): a report on s1 was written to a's socket before this
  // marker, one from s3 was published before it.
  await flushPath(resumed, a) // s3 → s1
  t.equal(a.all('peer-disconnected').length, 1, 'the resumed peer was not reported gone')
  const probe = await connect(t, s1.ws)
  const peers = (await join(probe, 'kill')).peers
  t.same([...peers].sort(), [a.peerId, resumer.peerId].sort(), 'the dead instance\'s peer is gone from peers')

  a.send('offer', { peerId: resumed.peerId, offer: OFFER })
  t.equal((await resumed.next('offer')).data.from, a.peerId, 'relay to the resumed peer on its new instance')
  resumed.send('answer', { peerId: a.peerId, answer: { type: 'answer', sdp: 'v=0' } })
  t.equal((await a.next('answer')).data.from, resumed.peerId)
})

t.test('graceful SIGTERM: clients resume on another instance with their identity, nobody sees a disconnect', async (t) => {
  const { servers: [s1, s2, s3] } = await cluster(t, 3, { RESUME_GRACE_MS: '5000', INSTANCE_DEAD_AFTER_MS: '1500' })
  if (s1 === undefined || s2 === undefined || s3 === undefined) throw new Error('three servers expected')
  await createRoom(s1, 'drain')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  const c = await connect(t, s3.ws)
  await join(a, 'drain')
  await join(b, 'drain')
  await join(c, 'drain')
  await a.next('ready')
  await a.next('ready')
  await b.next('ready')

  s2.child.kill('SIGTERM')
  t.equal((await b.closed).code, 1001)
  // As a client does: reconnect through the load balancer at once, landing on a survivor.
  const b2 = await connect(t, `${s1.ws}?resume=${encodeURIComponent(b.token)}`)
  t.equal(b2.peerId, b.peerId, 'same identity on the surviving instance')
  t.equal((await s2.exited).code, 0, 'the drained instance exits 0 once its session has moved')
  a.send('offer', { peerId: b2.peerId, offer: OFFER })
  t.equal((await b2.next('offer')).data.from, a.peerId)
  b2.send('initiator-online', { roomId: 'drain' })
  await a.next('initiator-online')
  await c.next('initiator-online')
  // s2 has exited, after quitting its Redis connection: Redis ran everything
  // s2 published before these markers, which reach s1 and s3 behind all of
  // it. (A third instance is what makes such a marker possible: with two,
  // nothing publishes to s1 once s2 is gone.)
  await flushPath(c, a) // s3 → s1
  await flushPath(a, c) // s1 → s3
  t.equal(a.all('peer-disconnected').length + c.all('peer-disconnected').length, 0, 'nobody saw a disconnect')
})

t.test('POST /api/leave_room works whichever instance receives it', async (t) => {
  const { servers: [s1, s2] } = await cluster(t, 2)
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  await createRoom(s1, 'beacon')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  await join(a, 'beacon')
  await join(b, 'beacon')
  const post = (payload: object) => fetch(`${s1.http}/api/leave_room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) })
  t.equal((await post({ roomId: 'beacon', peerId: b.peerId, token: a.token })).status, 403, 'a wrong token is refused on another instance too')
  const res = await post({ roomId: 'beacon', peerId: b.peerId, token: b.token })
  t.equal(res.status, 200)
  t.same(await res.json(), { success: true, message: 'Successfully left the room' })
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId })
})

t.test('Redis stopped mid-session: processes stay up, /ready 503, joins unavailable; after restart new sessions work across instances', async (t) => {
  const { redis, servers: [s1, s2] } = await cluster(t, 2, { REDIS_CONNECT_TIMEOUT_MS: '500' })
  if (s1 === undefined || s2 === undefined) throw new Error('two servers expected')
  await createRoom(s1, 'before')
  const a = await connect(t, s1.ws)
  const b = await connect(t, s2.ws)
  await join(a, 'before')
  await join(b, 'before')
  await a.next('ready') // b's membership reached a's instance

  await redis.stop()
  for (const s of [s1, s2]) {
    t.equal((await fetch(`${s.http}/ready`)).status, 503, '/ready 503')
    t.equal((await fetch(`${s.http}/health`)).status, 200, '/health 200')
  }
  const c = await connect(t, s1.ws)
  t.match((await c.request('join', { roomId: 'before' }, 'joinResponse')).data, { success: false, code: 'unavailable' })
  const res = await fetch(`${s2.http}/api/get_room`)
  t.equal(res.status, 503)
  const relay = await a.request('offer', { peerId: b.peerId, offer: OFFER }, 'error')
  t.equal(relay.data.code, 'unavailable', 'a cross-instance relay reports the outage')
  t.equal(a.ws.readyState, a.ws.OPEN, 'sockets stay open')
  t.equal(s1.child.exitCode, null, 'no process exited')
  t.equal(s2.child.exitCode, null)

  await redis.start()
  t.ok(await until(async () => (await fetch(`${s1.http}/ready`)).status === 200 && (await fetch(`${s2.http}/ready`)).status === 200, 15_000), 'both ready again')
  await createRoom(s2, 'after')
  const x = await connect(t, s1.ws)
  const y = await connect(t, s2.ws)
  await join(x, 'after')
  await join(y, 'after')
  t.same((await x.next('ready')).data, { peerId: y.peerId }, 'ready across instances after recovery')
  y.send('offer', { peerId: x.peerId, offer: OFFER })
  t.equal((await x.next('offer')).data.from, y.peerId, 'relay across instances after recovery (resubscribed)')
})
