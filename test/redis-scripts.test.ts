import t from 'tap'
import { Redis } from 'ioredis'
import { redisKeys } from '../src/redis/keys'
import { scriptCaller, type ScriptCaller } from '../src/redis/script'
import {
  ALL_SCRIPTS, CLUSTER_SCRIPTS, PUBLISH_COMMAND, RETRY, STANDALONE_SCRIPTS, admitConnection, claimSession, countRequest, endSession, joinRoom, touchRoom
} from '../src/redis/scripts'
import { createStandaloneLayout } from '../src/redis/standalone'
import { startRedis } from './helpers/redis'

/*
 * The registry of Redis scripts (src/redis/scripts.ts): every script is
 * declared once, with named keys and arguments, and its Lua uses exactly
 * those names; no Lua builds a key name. The one-Redis steps whose keys come
 * from data (claim, end) refuse to act on a premise that changed.
 */

/** `K.<name>` and `A.<name>` as a Lua body uses them. */
const used = (body: string, table: 'K' | 'A'): Set<string> => new Set([...body.matchAll(new RegExp(`\\b${table}\\.([A-Za-z_][A-Za-z0-9_]*)`, 'g'))].map(m => m[1] as string))

t.test('every script is declared once, and its Lua uses exactly the names it declares', async (t) => {
  // One name, one script; only the publish has one per set (PUBLISH or SPUBLISH), never both on one client.
  const shared = ALL_SCRIPTS.filter((s, i) => ALL_SCRIPTS.findIndex(other => other.name === s.name) !== i).map(s => s.name)
  t.same(shared, [PUBLISH_COMMAND], 'only the publish has two definitions')
  t.equal(new Set(STANDALONE_SCRIPTS.map(s => s.name)).size, STANDALONE_SCRIPTS.length, 'names unique in the one-Redis set')
  t.equal(new Set(CLUSTER_SCRIPTS.map(s => s.name)).size, CLUSTER_SCRIPTS.length, 'names unique in the cluster set')

  for (const script of ALL_SCRIPTS) {
    const keys = used(script.body, 'K')
    const args = used(script.body, 'A')
    // Rest lists are declared by name too (touchRoom's members, the publish's payloads, …).
    const declaredKeys = new Set(script.keyNames)
    const declaredArgs = new Set(script.argNames)
    for (const name of script.lua.matchAll(/^([KA])\.([A-Za-z_]\w*) = \{\}$/gm)) (name[1] === 'K' ? declaredKeys : declaredArgs).add(name[2] as string)
    t.same([...keys].filter(k => !declaredKeys.has(k)), [], `${script.name}: no undeclared key`)
    t.same([...declaredKeys].filter(k => !keys.has(k)), [], `${script.name}: every declared key is used`)
    t.same([...args].filter(a => !declaredArgs.has(a)), [], `${script.name}: no undeclared argument`)
    t.same([...declaredArgs].filter(a => !args.has(a)), [], `${script.name}: every declared argument is used`)
    t.notMatch(script.body, /\b(KEYS|ARGV)\s*\[/, `${script.name}: no KEYS or ARGV by position`)
    if (script.numberOfKeys !== undefined) t.equal(script.numberOfKeys, script.keyNames.length, `${script.name}: declared key count`)
  }
})

t.test('no Lua builds a key name: no string concatenation, no prefix argument', async (t) => {
  for (const script of ALL_SCRIPTS) {
    t.notMatch(script.lua, /\.\./, `${script.name}: no .. in its Lua`)
    t.notOk(script.argNames.some(name => /prefix/i.test(name)), `${script.name}: takes no key prefix`)
  }
})

t.test('every write refuses to run past its deadline; only the REST counter does not', async (t) => {
  t.same(ALL_SCRIPTS.filter(s => !s.fresh).map(s => s.name), [countRequest.name])
  for (const script of ALL_SCRIPTS.filter(s => s.fresh)) t.match(script.lua, /^do\n {2}local t = redis\.call\('TIME'\)/, `${script.name} starts with the deadline check`)
})

t.test('a call passes its keys, then its arguments, then the deadline, in declared order', async (t) => {
  const keys = { room: 'r', sockets: 's', binding: 'b', peers: 'p', session: 'se', owned: 'o' }
  const args = { peerId: 'x', roomId: 'y', max: 2, ttl: 60, instance: 'i', secretHash: 'h', ownedTtl: 90, deadline: 123 }
  t.same(joinRoom.argv(keys, args), ['r', 's', 'b', 'p', 'se', 'o', 'x', 'y', 2, 60, 'i', 'h', 90, 123])
  t.same(touchRoom.argv({ room: 'r', sockets: 's', peers: 'p', members: ['b1', 's1'] }, { roomId: 'y', ttl: 60, deadline: 1 }),
    [5, 'r', 's', 'p', 'b1', 's1', 'y', 60, 1], 'a varying key count goes first')
  t.same(admitConnection.argv({ conns: 'c' }, { self: 'a', cap: 3, mine: 1, ttl: 9, discounted: '', live: ['a', 'b'], deadline: 7 }),
    ['c', 'a', 3, 1, 9, '', 'a', 'b', 7])
  const claimKeys = { session: 's', parked: 'p', ownedByPrevious: 'o1', ownedByClaimer: 'o2' }
  const claimArgs = { expectedHash: 'e', newHash: 'n', instance: 'i', previous: 'i0', roomId: '', ttl: 1, peerId: 'x', ownedTtl: 2, deadline: 3 }
  t.same(claimSession.argv(claimKeys, claimArgs).slice(0, 5), [4, 's', 'p', 'o1', 'o2'], 'optional keys left out')
  t.same(claimSession.argv({ ...claimKeys, roomPeers: 'rp' }, claimArgs).slice(0, 6), [5, 's', 'p', 'o1', 'o2', 'rp'], 'optional keys passed')
  t.throws(() => endSession.argv({ session: 's', parked: 'p', owned: 'o', binding: 'b', room: 'r' } as never, { owner: 'i', peerId: 'x', roomId: 'r', emptyTtl: 1, deadline: 1 }),
    /go together/, 'an optional group is all or none')
})

/** Never run: tsc (npm run typecheck) checks that a call names every key and argument, and only those. */
export function typeChecks (call: ScriptCaller): Array<Promise<unknown>> {
  const keys = { room: 'r', sockets: 's', binding: 'b', peers: 'p', session: 'se', owned: 'o' }
  const args = { peerId: 'x', roomId: 'y', max: 2, ttl: 60, instance: 'i', secretHash: 'h', ownedTtl: 90, deadline: 1 }
  const calls: Array<Promise<unknown>> = []
  calls.push(call(joinRoom, keys, args))
  // @ts-expect-error a missing argument
  calls.push(call(joinRoom, keys, { peerId: 'x', roomId: 'y', max: 2, ttl: 60, instance: 'i', secretHash: 'h', deadline: 1 }))
  // @ts-expect-error a missing key
  calls.push(call(joinRoom, { room: 'r', sockets: 's', binding: 'b', peers: 'p', session: 'se' }, args))
  // @ts-expect-error a write without its deadline
  calls.push(call(joinRoom, keys, { peerId: 'x', roomId: 'y', max: 2, ttl: 60, instance: 'i', secretHash: 'h', ownedTtl: 90 }))
  // @ts-expect-error an argument of the wrong type
  calls.push(call(joinRoom, keys, { ...args, max: [2] }))
  // @ts-expect-error half of an optional key group
  calls.push(call(endSession, { session: 's', parked: 'p', owned: 'o', binding: 'b', room: 'r' }, { owner: 'i', peerId: 'x', roomId: 'r', emptyTtl: 1, deadline: 1 }))
  return calls
}

t.test('one Redis: a claim or an end whose premise changed under it writes nothing and answers retry', async (t) => {
  const redis = await startRedis(t)
  const client = new Redis(redis.url)
  t.teardown(() => client.quit())
  const call = scriptCaller(client, STANDALONE_SCRIPTS)
  const keys = redisKeys(redis.prefix)
  const deadline = (): number => Date.now() + 60_000
  const layout = createStandaloneLayout({ redis: client, keyPrefix: redis.prefix, deadline })

  await client.hset(keys.roomKey('r1'), 'created_at', 1)
  await client.expire(keys.roomKey('r1'), 60)
  t.same(await layout.join({ roomId: 'r1', peerId: 'p1', max: 4, ttl: 60, emptyTtl: 30, instance: 'n1', secretHash: 'h1', ownedTtl: 90 }),
    { ok: true, members: [{ peerId: 'p1', instance: 'n1' }] })
  const before = await client.hgetall(keys.sessionKey('p1'))

  const claimKeys = { session: keys.sessionKey('p1'), parked: keys.parkedKey('p1'), ownedByPrevious: keys.ownedKey('n1'), ownedByClaimer: keys.ownedKey('n2') }
  const stale = await call(claimSession, claimKeys, { expectedHash: 'h1', newHash: 'h2', instance: 'n2', previous: 'n1', roomId: '', ttl: 60, peerId: 'p1', ownedTtl: 90, deadline: deadline() })
  t.equal(stale, RETRY, 'a claim that read no room while the session is in r1 retries')
  t.same(await client.hgetall(keys.sessionKey('p1')), before, 'and wrote nothing')

  const peerKeys = { session: keys.sessionKey('p1'), parked: keys.parkedKey('p1'), owned: keys.ownedKey('n1'), binding: keys.bindingKey('p1') }
  const roomKeys = { room: keys.roomKey('r2'), sockets: keys.socketsKey('r2'), peers: keys.peersKey('r2') }
  const otherRoom = await call(endSession, { ...peerKeys, ...roomKeys }, { owner: 'n1', peerId: 'p1', roomId: 'r2', emptyTtl: 30, deadline: deadline() })
  t.equal(otherRoom, RETRY, 'an end that read another room retries')
  t.ok(await client.exists(keys.sessionKey('p1')), 'and ended nothing')

  const claimed = await layout.claim({ peerId: 'p1', expectedHash: 'h1', newHash: 'h2', instance: 'n2', ttl: 60, ownedTtl: 90 })
  t.same(claimed, { previous: 'n1', roomId: 'r1', members: [{ peerId: 'p1', instance: 'n2' }], epoch: 1, parked: [] }, 'the layout reads, then claims')
  t.same(await client.smembers(keys.ownedKey('n1')), [], 'the previous owner no longer owns it')
  t.same(await client.smembers(keys.ownedKey('n2')), ['p1'], 'the claimer does')
  t.equal(await layout.claim({ peerId: 'p1', expectedHash: 'h1', newHash: 'h3', instance: 'n3', ttl: 60, ownedTtl: 90 }), null, 'an old secret claims nothing')
  t.equal(await layout.claim({ peerId: 'nobody', expectedHash: 'h1', newHash: 'h3', instance: 'n3', ttl: 60, ownedTtl: 90 }), null, 'nor does a missing session')

  t.equal(await layout.end({ peerId: 'p1', owner: 'n1', emptyTtl: 30 }), null, 'a former owner ends nothing')
  t.same(await layout.end({ peerId: 'p1', owner: 'n2', emptyTtl: 30 }), { roomId: 'r1', remaining: [] }, 'the owner ends it and its membership')
  t.equal(await client.exists(keys.sessionKey('p1'), keys.bindingKey('p1'), keys.ownedKey('n2')), 0, 'session, binding and ownership gone')
  t.same(await client.smembers(keys.socketsKey('r1')), [], 'the room has no members')
  t.ok(await client.ttl(keys.roomKey('r1')) <= 30, 'and the empty room TTL')
})
