import type { Layout, LayoutOptions } from './layout'
import { redisKeys } from './keys'
import { scriptCaller } from './script'
import { RETRY, STANDALONE_SCRIPTS, claimSession, endSession, joinRoom, leaveRoom, publish, touchRoom } from './scripts'

/*
 * The data model on one Redis (direct or through Sentinel): every step is
 * one script, so it is atomic however many keys it spans. A step whose keys
 * depend on data (the room a session is in, the instance that owns it) reads
 * that data first and passes the keys; the script checks the data is still
 * what was read and answers RETRY otherwise, and the step is tried again.
 */

/** Attempts of a step whose premise keeps changing under it (each is one read and one script). */
const ATTEMPTS = 8

export function createStandaloneLayout (opts: LayoutOptions): Layout {
  const { redis, deadline } = opts
  const keys = redisKeys(opts.keyPrefix)
  const call = scriptCaller(redis, STANDALONE_SCRIPTS)

  async function untilSettled<T> (step: string, attempt: () => Promise<T | typeof RETRY>): Promise<T> {
    for (let i = 0; i < ATTEMPTS; i++) {
      const result = await attempt()
      if (result !== RETRY) return result
    }
    throw new Error(`${step}: the session record kept changing; nothing was written`)
  }

  return {
    keys,
    call,

    join: (a) => call(joinRoom, {
      room: keys.roomKey(a.roomId),
      sockets: keys.socketsKey(a.roomId),
      binding: keys.bindingKey(a.peerId),
      peers: keys.peersKey(a.roomId),
      session: keys.sessionKey(a.peerId),
      owned: keys.ownedKey(a.instance)
    }, { peerId: a.peerId, roomId: a.roomId, max: a.max, ttl: a.ttl, instance: a.instance, secretHash: a.secretHash, ownedTtl: a.ownedTtl, deadline: deadline() }),

    leave: (a) => call(leaveRoom, {
      room: keys.roomKey(a.roomId),
      sockets: keys.socketsKey(a.roomId),
      binding: keys.bindingKey(a.peerId),
      peers: keys.peersKey(a.roomId),
      session: keys.sessionKey(a.peerId)
    }, { peerId: a.peerId, roomId: a.roomId, emptyTtl: a.emptyTtl, deadline: deadline() }),

    async touch ({ occupied, ttl }) {
      // One script per room, auto-pipelined into one write.
      await Promise.all(occupied.map(({ roomId, peerIds }) => call(touchRoom, {
        room: keys.roomKey(roomId),
        sockets: keys.socketsKey(roomId),
        peers: keys.peersKey(roomId),
        members: peerIds.flatMap(id => [keys.bindingKey(id), keys.sessionKey(id)])
      }, { roomId, ttl, deadline: deadline() })))
    },

    claim: (a) => untilSettled('claim', async () => {
      // The previous owner's peer set and the room are keys the record names.
      const [previous = null, room = null] = await redis.hmget(keys.sessionKey(a.peerId), 'instance', 'room')
      if (previous === null) return null
      const roomId = room ?? ''
      const peer = { session: keys.sessionKey(a.peerId), parked: keys.parkedKey(a.peerId), ownedByPrevious: keys.ownedKey(previous), ownedByClaimer: keys.ownedKey(a.instance) }
      return await call(claimSession, roomId === '' ? peer : { ...peer, roomPeers: keys.peersKey(roomId) }, {
        expectedHash: a.expectedHash,
        newHash: a.newHash,
        instance: a.instance,
        previous,
        roomId,
        ttl: a.ttl,
        peerId: a.peerId,
        ownedTtl: a.ownedTtl,
        deadline: deadline()
      })
    }),

    end: (a) => untilSettled('end', async () => {
      // The room's keys are keys the record names.
      const roomId = await redis.hget(keys.sessionKey(a.peerId), 'room') ?? ''
      const peer = { session: keys.sessionKey(a.peerId), parked: keys.parkedKey(a.peerId), owned: keys.ownedKey(a.owner), binding: keys.bindingKey(a.peerId) }
      return await call(endSession, roomId === '' ? peer : { ...peer, room: keys.roomKey(roomId), sockets: keys.socketsKey(roomId), peers: keys.peersKey(roomId) }, { owner: a.owner, peerId: a.peerId, roomId, emptyTtl: a.emptyTtl, deadline: deadline() })
    }),

    publish: (a) => call(publish, { channel: keys.channel(a.node) }, { payloads: a.payloads, deadline: deadline() }),

    subscribe: (subscriber, channel) => subscriber.subscribe(channel),
    unsubscribe: (subscriber, channel) => subscriber.unsubscribe(channel),
    messageEvent: 'message'
  }
}
