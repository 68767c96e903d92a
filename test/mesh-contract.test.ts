import t from 'tap'
import type { Test } from 'tap'
import type { Member } from '../src/store/types'
import type { Handover } from '../src/signaling/mesh'
import type { BusMessage, Envelope } from '../src/signaling/bus'
import { startRedis, type TestRedis } from './helpers/redis'
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster'
import { DEAD_AFTER_MS, eventually, fakeWorld, redisWorld, type ContractNode, type MeshWorld, type WorldKind } from './helpers/mesh-world'

/*
 * One contract for the Mesh port (src/signaling/mesh.ts), run against the
 * in-process fake (test/helpers/fake-mesh.ts, which the core's unit tests
 * use) and createRedisMesh on a real redis-server, standalone and Cluster.
 * Every check holds for all three: the fake may carry no behaviour of the
 * Redis scripts that is not pinned here. Sessions are written the way the
 * core writes them: by the Store's join (with the resume secret's hash).
 */

const WORLDS: WorldKind[] = ['fake', 'redis', 'redis-cluster']
const only = process.env['MESH_CONTRACT_WORLDS']?.split(',') ?? WORLDS

const byPeer = (members: Member[]): Member[] => [...members].sort((x, y) => x.peerId.localeCompare(y.peerId))

/** A peer in a room with a resumable session owned by `node` (created if the room is missing). */
async function joined (node: ContractNode, roomId: string, peerId: string, hash: string): Promise<void> {
  await node.store.createRoom(roomId)
  const reply = await node.mesh.joinRoom(roomId, peerId, 8, hash)
  if (!reply.ok) throw new Error(`join of ${peerId} failed: ${reply.code}`)
}

const envelope = (n: number): Envelope => ({ frame: `{"type":"offer","n":${n}}`, type: 'offer', from: 'sender', id: `o${n}`, epoch: 1, seq: n, origin: 'a' })
const handover = (n: number): Handover => ({ baseline: [[`from${n}`, 1, n, 0, []]], held: [envelope(n)] })

for (const kind of WORLDS) {
  t.test(`mesh contract: ${kind}`, { skip: !only.includes(kind) }, async (t) => {
    let redis: TestRedis | undefined
    let cluster: TestCluster | undefined
    if (kind === 'redis') redis = await startRedis(t)
    if (kind === 'redis-cluster') cluster = await startRedisCluster(t, { primaries: 3, replicas: 0 })
    let n = 0
    const world = (t: Test): MeshWorld => {
      const prefix = `mc${process.pid}x${++n}:`
      if (redis !== undefined) return redisWorld(t, { redis }, prefix)
      if (cluster !== undefined) return redisWorld(t, { cluster }, prefix)
      return fakeWorld(t)
    }

    t.test('send: messages reach the node they are sent to, in order, intact; send resolves true', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      const msgs: BusMessage[] = [
        { kind: 'T', origin: 'a', peerId: 'p1' },
        { kind: 'D', origin: 'a', roomId: 'r', from: 'p1', epoch: 2, type: 'offer', id: 'x', broadcast: false, targets: [['p2', 7]], frame: '{"type":"offer","data":"line\\nbreak"}\n["forged"]' },
        { kind: 'M', origin: 'a', roomId: 'r', peerId: 'p1', node: 'a' }
      ]
      t.same(await Promise.all(msgs.map(m => a.mesh.send('b', m))), [true, true, true])
      t.ok(await eventually(w, () => b.messages.length >= msgs.length), 'delivered')
      t.same(b.messages, msgs, 'in order, as sent')
      t.same(a.messages, [], 'nothing echoed to the sender')
    })

    t.test('send to a node nobody serves resolves false', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      t.equal(await a.mesh.send('nobody', { kind: 'T', origin: 'a', peerId: 'p' }), false)
    })

    t.test('readSession: the record a join wrote, from any node; null for none', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      t.same(await b.mesh.readSession('p'), { secret: 'h1', room: 'r', node: 'a' })
      t.equal(await b.mesh.readSession('ghost'), null)
      await a.mesh.joinRoom('r', 'nosecret', 8, '')
      t.equal(await b.mesh.readSession('nosecret'), null, 'a join without a secret leaves nothing to resume')
    })

    t.test('a join of a peer whose session exists takes it over with the new secret and room, and keeps its epoch', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await b.mesh.claimSession('p', 'h1', 'h2')
      await joined(a, 'r2', 'p', 'h5')
      t.same(await b.mesh.readSession('p'), { secret: 'h5', room: 'r2', node: 'a' })
      await a.mesh.leaveRoom('r', 'p')
      t.same(await b.mesh.readSession('p'), { secret: 'h5', room: 'r2', node: 'a' }, 'leaving another room leaves the session\'s room alone')
      t.match(await b.mesh.claimSession('p', 'h5', 'h6'), { previous: 'a', roomId: 'r2', epoch: 2 }, 'the epoch went on')
    })

    t.test('claimSession: only with the current secret; moves the owner and the route, bumps the epoch', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await joined(a, 'r', 'q', 'hq')
      t.equal(await b.mesh.claimSession('p', 'wrong', 'h2'), null, 'a wrong secret claims nothing')
      t.same(await b.mesh.readSession('p'), { secret: 'h1', room: 'r', node: 'a' }, 'and changes nothing')

      const claimed = await b.mesh.claimSession('p', 'h1', 'h2')
      t.match(claimed, { previous: 'a', roomId: 'r', epoch: 1, parked: null })
      t.same(byPeer(claimed?.members ?? []), [{ peerId: 'p', instance: 'b' }, { peerId: 'q', instance: 'a' }], 'the members, the claimed peer routed to its new node')
      t.same(await a.mesh.readSession('p'), { secret: 'h2', room: 'r', node: 'b' })
      t.equal(await a.mesh.ownerOf('p'), 'b')
      t.equal(await a.mesh.claimSession('p', 'h1', 'h3'), null, 'the old secret is spent')

      const back = await a.mesh.claimSession('p', 'h2', 'h3')
      t.match(back, { previous: 'b', roomId: 'r', epoch: 2 }, 'each claim bumps the epoch')
      t.same(byPeer(back?.members ?? []), [{ peerId: 'p', instance: 'a' }, { peerId: 'q', instance: 'a' }])

      const race = await Promise.all([a.mesh.claimSession('p', 'h3', 'x'), b.mesh.claimSession('p', 'h3', 'y')])
      t.equal(race.filter(r => r !== null).length, 1, 'of two claims with one secret, one wins')
      t.match(race.find(r => r !== null), { epoch: 3 })
    })

    t.test('claimSession of a session whose peer left its room: no room, no members', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await joined(a, 'r', 'q', 'hq')
      t.equal(await a.mesh.leaveRoom('r', 'p'), true)
      t.same(await b.mesh.readSession('p'), { secret: 'h1', room: '', node: 'a' }, 'the session outlives the membership')
      t.equal(await b.store.peerRoom('p'), null)
      t.match(await b.mesh.claimSession('p', 'h1', 'h2'), { previous: 'a', roomId: null, members: [], epoch: 1 })
      t.same(await a.store.roomMembers('r'), ['q'], 'the claim did not put it back in the room')
    })

    t.test('park: handovers left for a peer are merged in order and taken by the next claim only', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      t.equal(await a.mesh.park('p', 'a', handover(1)), 'a', 'parked: the owner found is the one named')
      t.equal(await a.mesh.park('p', 'a', handover(2)), 'a')
      const claimed = await b.mesh.claimSession('p', 'h1', 'h2')
      t.same(claimed?.parked, { baseline: [...handover(1).baseline, ...handover(2).baseline], held: [envelope(1), envelope(2)] }, 'taken in the same step, in order')
      t.equal((await a.mesh.claimSession('p', 'h2', 'h3'))?.parked, null, 'and only once')
    })

    t.test('park for a session another node owns parks nothing and names that owner; null for a session that is over', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      t.equal(await b.mesh.park('p', 'b', handover(1)), 'a', 'the peer is on a')
      t.equal((await b.mesh.claimSession('p', 'h1', 'h2'))?.parked, null, 'nothing was parked')
      t.equal(await a.mesh.park('ghost', 'a', handover(1)), null)
    })

    t.test('rotateSecret: the new secret is the one a claim needs; no record appears for a missing session', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await a.mesh.rotateSecret('p', 'h9')
      t.same(await b.mesh.readSession('p'), { secret: 'h9', room: 'r', node: 'a' })
      t.equal(await b.mesh.claimSession('p', 'h1', 'h2'), null, 'the old secret no longer claims')
      t.match(await b.mesh.claimSession('p', 'h9', 'h2'), { previous: 'a', epoch: 1 })
      await a.mesh.rotateSecret('ghost', 'h1')
      t.equal(await a.mesh.readSession('ghost'), null)
    })

    t.test('endSession: the owner ends a session and its membership, and learns who remains', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await joined(b, 'r', 'q', 'hq')
      t.same(await a.mesh.endSession('p'), { peerId: 'p', roomId: 'r', remaining: [{ peerId: 'q', instance: 'b' }] })
      t.equal(await b.mesh.readSession('p'), null, 'the session is over')
      t.equal(await b.mesh.ownerOf('p'), null)
      t.same(await b.store.roomMembers('r'), ['q'], 'and so is its membership')
      t.equal(await b.store.peerRoom('p'), null)
      t.equal(await a.mesh.endSession('p'), null, 'a second end finds nothing')
    })

    t.test('endSession only while the given owner owns the session: null once it moved', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await b.mesh.claimSession('p', 'h1', 'h2')
      t.equal(await a.mesh.endSession('p'), null, 'a no longer owns it')
      t.same(await a.mesh.readSession('p'), { secret: 'h2', room: 'r', node: 'b' }, 'untouched')
      t.same(await a.store.roomMembers('r'), ['p'])
      t.same(await a.mesh.endSession('p', 'b'), { peerId: 'p', roomId: 'r', remaining: [] }, 'ended in the name of its owner')
      t.equal(await a.mesh.ownerOf('p'), null)
    })

    t.test('endSession of a session outside any room', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      await joined(a, 'r', 'p', 'h1')
      await a.mesh.leaveRoom('r', 'p')
      t.same(await a.mesh.endSession('p'), { peerId: 'p', roomId: '', remaining: [] })
      t.equal(await a.mesh.readSession('p'), null)
    })

    t.test('endSession drops what was parked for the session', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await a.mesh.park('p', 'a', handover(1))
      await a.mesh.endSession('p')
      await joined(a, 'r', 'p', 'h2') // the same peer id, a new session
      t.match(await b.mesh.claimSession('p', 'h2', 'h3'), { previous: 'a', parked: null }, 'a new session finds nothing of the old one')
    })

    t.test('ownersOf: each session\'s owner; not reapable while heart-beating, reapable after a freeze of dead-after', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await joined(b, 'r', 'q', 'hq')
      const found = await a.mesh.ownersOf(['p', 'q', 'ghost'])
      t.same(found, { owners: new Map([['p', 'a'], ['q', 'b'], ['ghost', null]]), reapable: false })
      await w.freeze(DEAD_AFTER_MS + 50)
      t.equal((await a.mesh.ownersOf(['p']))?.reapable, true, 'silent for dead-after: a survivor may have reaped it')
      t.ok(await eventually(w, async () => (await a.mesh.ownersOf(['p']))?.reapable === false), 'and once it beats again, no longer')
    })

    t.test('a registry that lost its data: registryLost, ownersOf answers null until restore, which rewrites sessions and rooms', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'h1')
      await joined(b, 'r', 'q', 'hq')
      await w.loseData()
      t.ok(await eventually(w, () => a.lost > 0 && b.lost > 0), 'every node hears of the loss')
      t.equal(await a.mesh.ownersOf(['p']), null, 'a missing record proves nothing now')
      await b.mesh.restore([{ peerId: 'q', secret: 'hq', roomId: 'r', epoch: 0 }])
      await a.mesh.restore([
        { peerId: 'p', secret: 'h1', roomId: 'r', epoch: 3 },
        // b rewrote q already: a's stale idea of it is left alone.
        { peerId: 'q', secret: 'stale', roomId: 'r', epoch: 9 }
      ])
      t.ok(await eventually(w, async () => (await a.mesh.ownersOf(['p', 'q'])) !== null), 'believed again after the restore')
      t.same((await a.mesh.ownersOf(['p', 'q']))?.owners, new Map([['p', 'a'], ['q', 'b']]))
      t.same(await a.mesh.readSession('p'), { secret: 'h1', room: 'r', node: 'a' })
      t.same(await a.mesh.readSession('q'), { secret: 'hq', room: 'r', node: 'b' }, 'the owner\'s rewrite wins')
      t.same((await a.store.roomMembers('r')).sort(), ['p', 'q'], 'the memberships are back')
      t.equal(await a.store.peerRoom('p'), 'r', 'with the peer\'s binding to its room')
      const claimed = await b.mesh.claimSession('p', 'h1', 'h2')
      t.match(claimed, { previous: 'a', roomId: 'r', epoch: 4 }, 'the epoch goes on from the restored one')
      t.same(byPeer(claimed?.members ?? []), [{ peerId: 'p', instance: 'b' }, { peerId: 'q', instance: 'b' }])
    })

    t.test('othersAlive, othersSeen, liveNodes: the other nodes while they beat; one that leaves drops out', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      t.ok(await eventually(w, () => a.mesh.othersSeen && [...a.mesh.liveNodes].sort().join() === 'a,b'), 'a sees b')
      t.equal(await a.mesh.othersAlive(), true)
      await b.mesh.stop()
      await b.mesh.leave([])
      t.equal(await a.mesh.othersAlive(), false, 'gone at once for a round trip')
      t.ok(await eventually(w, () => !a.mesh.othersSeen && a.mesh.liveNodes.join() === 'a'), 'and at the next heartbeat for the cached view')
    })

    t.test('stop: whatever was received, arrived before stop resolved; nothing after; sends to it resolve false', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      const sends: Array<Promise<boolean>> = []
      const msg = (i: number): BusMessage => ({ kind: 'T', origin: 'b', peerId: `p${i}` })
      const burst = (): void => { for (let k = 0; k < 5; k++) sends.push(b.mesh.send('a', msg(sends.length))) }
      burst()
      await new Promise(resolve => setImmediate(resolve))
      burst()
      let atStop = -1
      const stopped = a.mesh.stop().then(() => { atStop = a.messages.length })
      // Sends keep leaving while the stop is under way.
      for (;;) {
        burst()
        await new Promise(resolve => setImmediate(resolve))
        if (atStop >= 0) break
      }
      await stopped
      const answered = await Promise.all(sends)
      await w.elapse(100)
      t.equal(a.messages.length, atStop, 'nothing arrives after stop resolved')
      t.same(a.messages, answered.flatMap((received, i) => received ? [msg(i)] : []), 'exactly the sends answered true, in order')
      t.equal(await b.mesh.send('a', msg(99)), false)
    })

    t.test('leave with sessions left: a survivor ends them after the grace and tells their rooms; one resumed meanwhile is spared', async (t) => {
      const w = world(t)
      const a = await w.node('a')
      const b = await w.node('b')
      await joined(a, 'r', 'p', 'hp')
      await joined(a, 'r', 'm', 'hm')
      await joined(a, 'r2', 'lone', 'hl')
      await a.mesh.leaveRoom('r2', 'lone')
      await joined(b, 'r', 'q', 'hq')
      await a.mesh.stop()
      await a.mesh.leave([{ peerId: 'p', roomId: 'r' }, { peerId: 'm', roomId: 'r' }, { peerId: 'lone', roomId: null }])
      t.match(await b.mesh.claimSession('m', 'hm', 'hm2'), { previous: 'a' }, 'm resumes on b within the grace')
      t.ok(await eventually(w, () => b.ended.length > 0), 'b ends a\'s sessions')
      t.equal(b.ended.length, 1, 'in one event')
      t.same(b.ended[0]?.map(e => ({ ...e, remaining: byPeer(e.remaining) })), [
        { peerId: 'p', roomId: 'r', remaining: [{ peerId: 'm', instance: 'b' }, { peerId: 'q', instance: 'b' }] }
      ], 'the session in a room, with who remains; the roomless one is ended without a room to tell')
      t.equal(await b.mesh.readSession('p'), null)
      t.equal(await b.mesh.readSession('lone'), null)
      t.same(await b.mesh.readSession('m'), { secret: 'hm2', room: 'r', node: 'b' })
      t.same((await b.store.roomMembers('r')).sort(), ['m', 'q'])
    })
  })
}
