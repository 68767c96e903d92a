import type { Layout, LayoutOptions } from './layout'
import { redisKeys } from './keys'
import { scriptCaller } from './script'
import {
  CLUSTER_SCRIPTS, clusterBindPeer, clusterClaimRoom, clusterClaimSession, clusterEndSession, clusterJoinRoom, clusterLeaveRoom,
  clusterOwn, clusterPublish, clusterTouchPeer, clusterTouchRoom, clusterUnbindPeer
} from './scripts'

/*
 * The data model on Redis Cluster: the same keys as on one Redis, with hash
 * tags so that the keys of one script share a slot (src/redis/keys.ts). A
 * script may only touch one slot, so a step that spans a room, a peer and
 * an instance is one script per slot, in an order that leaves nothing a
 * reader would act on when a later one fails. Instance channels are sharded
 * (SPUBLISH, SSUBSCRIBE): a message crosses only its channel's shard.
 */

export function createClusterLayout (opts: LayoutOptions): Layout {
  const { redis, deadline } = opts
  const keys = redisKeys(opts.keyPrefix, true)
  const call = scriptCaller(redis, CLUSTER_SCRIPTS)
  const room = (roomId: string) => ({ room: keys.roomKey(roomId), sockets: keys.socketsKey(roomId), peers: keys.peersKey(roomId) })
  const peer = (peerId: string) => ({ binding: keys.bindingKey(peerId), session: keys.sessionKey(peerId) })
  const own = (instance: string, peerId: string, ttl: number | '') => call(clusterOwn, { owned: keys.ownedKey(instance) }, { peerId, ttl, deadline: deadline() })

  async function leaveRoom (roomId: string, peerId: string, emptyTtl: number) {
    return await call(clusterLeaveRoom, room(roomId), { peerId, emptyTtl, deadline: deadline() })
  }

  return {
    keys,
    call,

    /**
     * The room decides (exists, capacity) and records the member, then the
     * peer's binding and session follow, then the instance's peer set. When
     * a later step fails, a member this join added is taken out of the room
     * again (best effort: a room member without a session is what a crash
     * between the steps could leave, and the room's TTL ends it).
     */
    async join (a) {
      const joined = await call(clusterJoinRoom, room(a.roomId), { peerId: a.peerId, max: a.max, ttl: a.ttl, instance: a.instance, deadline: deadline() })
      if (!joined.ok) return joined
      try {
        await call(clusterBindPeer, peer(a.peerId), { roomId: a.roomId, ttl: a.ttl, instance: a.instance, secretHash: a.secretHash, deadline: deadline() })
        if (a.secretHash !== '') await own(a.instance, a.peerId, a.ownedTtl)
      } catch (err) {
        // Only a member this join added: a same-room rejoin keeps its membership.
        if (joined.added) await leaveRoom(a.roomId, a.peerId, a.emptyTtl).catch(() => {})
        throw err
      }
      return { ok: true, members: joined.members }
    },

    /** The peer's side first, so no binding outlives the membership. */
    async leave (a) {
      await call(clusterUnbindPeer, peer(a.peerId), { roomId: a.roomId, deadline: deadline() })
      return (await leaveRoom(a.roomId, a.peerId, a.emptyTtl)).removed
    },

    async touch ({ occupied, ttl }) {
      // A pipeline on a cluster must stay on one node: one script per slot, auto-pipelined per node instead.
      await Promise.all(occupied.flatMap(({ roomId, peerIds }) => [
        call(clusterTouchRoom, room(roomId), { ttl, deadline: deadline() }),
        ...peerIds.map(id => call(clusterTouchPeer, peer(id), { roomId, ttl, deadline: deadline() }))
      ]))
    },

    /** The session moves first (the secret check decides), then the instances' peer sets, then the room's route to the peer. */
    async claim (a) {
      const claimed = await call(clusterClaimSession, { session: keys.sessionKey(a.peerId), parked: keys.parkedKey(a.peerId) }, {
        expectedHash: a.expectedHash, newHash: a.newHash, instance: a.instance, ttl: a.ttl, deadline: deadline()
      })
      if (claimed === null) return null
      await Promise.all([own(claimed.previous, a.peerId, ''), own(a.instance, a.peerId, a.ownedTtl)])
      const members = claimed.roomId === '' ? null : await call(clusterClaimRoom, { peers: keys.peersKey(claimed.roomId) }, { peerId: a.peerId, instance: a.instance, deadline: deadline() })
      return { ...claimed, roomId: members === null ? '' : claimed.roomId, members: members ?? [] }
    },

    /** The session first: once it is gone nobody can resume it, and the room follows. */
    async end (a) {
      const roomId = await call(clusterEndSession, { session: keys.sessionKey(a.peerId), parked: keys.parkedKey(a.peerId), binding: keys.bindingKey(a.peerId) }, { owner: a.owner, deadline: deadline() })
      if (roomId === null) return null
      await own(a.owner, a.peerId, '')
      if (roomId === '') return { roomId: '', remaining: [] }
      return { roomId, remaining: (await leaveRoom(roomId, a.peerId, a.emptyTtl)).remaining }
    },

    publish: (a) => call(clusterPublish, { channel: keys.channel(a.node) }, { payloads: a.payloads, deadline: deadline() }),

    subscribe: (subscriber, channel) => subscriber.ssubscribe(channel),
    unsubscribe: (subscriber, channel) => subscriber.sunsubscribe(channel),
    messageEvent: 'smessage'
  }
}
