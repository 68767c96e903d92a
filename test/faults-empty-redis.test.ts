import t from 'tap'
import { startRedis } from './helpers/redis'
import { createRoom, waitForOutput } from './helpers/process'
import { connect, join } from './helpers/ws'
import { FAULT_SETTINGS, faultVerdict, sleep, startFleetNode, stopAndCount, streamingPairs } from './helpers/fleet'
import { ChurnPeer, LiveSet, pairUp } from './helpers/churn'
import { until } from './helper'

/*
 * Fleet faults (docs/protocol.md §3.3): Redis restarts without persistence
 * while clients are connected (as after a failover to an empty replica, or a
 * mistaken FLUSHALL). Every instance notices (the fleet marker is gone) and
 * rewrites what it serves: its record, its peers' sessions, their rooms and
 * memberships. Three real server processes, one real redis-server, 16 pairs
 * streaming numbered candidates with ids.
 *
 * What may happen to each message:
 * - delivered once, in order: everything, except
 * - refused to its sender by id: `unavailable` while Redis is down (a
 *   cross-instance relay cannot be published), `outcome_unknown` for a relay
 *   in flight when it went down.
 * After the rebuild: existing pairs relay, a newcomer joins an existing room,
 * a resume on another instance keeps its identity, and a held peer whose
 * grace runs out is announced. Before round 3, every join of an existing room
 * got room_not_found, and resumes got a new identity.
 */

t.setTimeout(120_000)

const PAIRS = 16

t.test('a Redis that comes back empty is rebuilt from what the instances still know', async (t) => {
  const redis = await startRedis(t, { own: true })
  const nodes = await Promise.all(['n1', 'n2', 'n3'].map(name => startFleetNode(t, redis, name)))
  const [n1, n2, n3] = nodes as [typeof nodes[0], typeof nodes[0], typeof nodes[0]]
  const peers = await streamingPairs(t, nodes, PAIRS, 'empty')
  // A held peer: it drops and never comes back; its partner must still hear of it after the grace.
  await createRoom(n1, 'held')
  const gone = await connect(t, n1.ws)
  const stays = await connect(t, n2.ws)
  await join(gone, 'held')
  await join(stays, 'held')
  // A room a newcomer will join after the restart.
  await createRoom(n2, 'lobby')
  const host = await connect(t, n2.ws)
  await join(host, 'lobby')
  await sleep(1000)

  const logged = nodes.map(n => n.server.output().length)
  const downAt = Date.now()
  await redis.stop()
  await sleep(500)
  await redis.start()
  const upAt = Date.now()
  t.comment(`redis down for ${upAt - downAt} ms, restarted empty`)

  // Every instance rewrites its sessions and rooms, each when its own writes
  // have landed (a write that times out on a loaded machine is retried):
  // waited for in each one's log, then what they wrote is checked.
  await Promise.all(nodes.map((n, i) => waitForOutput(n.server, 'rewrote this instance\'s sessions and rooms into the registry', 20_000, logged[i])))
  t.comment(`sessions rewritten ${Date.now() - upAt} ms after Redis was back`)
  const sessionsBack = async (): Promise<boolean> => {
    const found = await Promise.all(peers.map(async p => await redis.client.exists(`${redis.prefix}session:${p.peerId}`) === 1))
    return found.every(Boolean)
  }
  t.ok(await sessionsBack(), 'every session record is back')
  t.equal(await redis.client.scard(`${redis.prefix}room:empty-0:sockets`), 2, 'memberships are back')
  t.ok(await redis.client.ttl(`${redis.prefix}room:empty-0`) > 0, 'with their TTLs')
  t.ok(await redis.client.zscore(`${redis.prefix}instances`, (await redis.client.zrange(`${redis.prefix}instances`, 0, -1))[0] ?? '') !== null, 'instance records are back')

  // The held peer drops now (the rebuild wrote it as a member); its grace runs out later.
  gone.ws.terminate()

  // A newcomer joins an existing room (its record exists again only because of the rebuild).
  const newcomer = await connect(t, n3.ws)
  const joined = await newcomer.request('join', { roomId: 'lobby' }, 'joinResponse')
  t.equal(joined.data.success, true, 'a newcomer joins a room that existed before the restart')
  t.same(joined.data.peers, [host.peerId], 'and finds its member there')

  // A resume on another instance keeps its identity.
  const live = new LiveSet(nodes)
  const mover = new ChurnPeer('mover', { live })
  const partner = new ChurnPeer('partner', { live })
  t.teardown(() => { mover.dispose(); partner.dispose() })
  await createRoom(n1, 'mover')
  await mover.connect(n1)
  await partner.connect(n2)
  await pairUp(mover, partner, 'mover')
  const id = mover.peerId
  mover.drop()
  t.ok(await until(() => mover.conns.length === 2 && mover.server !== null, 5000), 'the dropped peer reconnected')
  t.equal(mover.peerId, id, 'and kept its identity')
  t.equal(mover.identityChanges, 0)
  t.not(mover.server, n1.name, 'on another instance')

  await sleep(3000)
  const r = await stopAndCount(t, peers, 'empty redis', [{ label: 'redis down', at: downAt }, { label: 'redis up', at: upAt }])
  faultVerdict(t, r, ['unavailable', 'outcome_unknown'], PAIRS * 2 * 150)

  const disconnected = await stays.next('peer-disconnected', FAULT_SETTINGS.RESUME_GRACE_MS + 5000)
  t.same(disconnected.data, { peerId: gone.peerId }, 'a held peer whose grace ran out is announced')
  for (const p of peers) p.dispose()
})
