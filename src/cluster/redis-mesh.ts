import type { RedisClient } from '../redis/client'
import { instanceRecordTtlS } from '../redis/keys'
import { createLayout } from '../redis/layouts'
import { parkHandover, restoreMember, restoreSession, rotateSecret } from '../redis/scripts'
import type { RedisLink } from '../redis/link'
import type { Handover, Mesh, MeshEvents } from '../signaling/mesh'
import { decodePayload, encodeBatch, encodeBus } from './codec'
import { createLiveness, type MeshSettings } from './liveness'
import { systemClock } from '../clock'
import { FleetMarker } from './fleet-marker'
import { StoreUnavailableError, type Store } from '../store/types'
import { brief } from '../brief'

/*
 * The mesh over one Redis: each instance subscribes to its own channel
 * `instance:<id>` on a second connection (a subscribed connection cannot run
 * commands) and publishes to the others' channels. PUBLISH answers how many
 * subscribers got the message: 0 means the instance is gone, and the core
 * re-routes (src/signaling/router.ts). Sessions live in Redis
 * (`session:<peerId>`, see src/redis/keys.ts) so a peer can resume on any
 * instance; liveness.ts ends the sessions of an instance that died.
 */

export interface RedisMeshOptions extends MeshSettings {
  /** Room memberships, written with the session record in one script (the store's join and leave). */
  rooms: Pick<Store, 'joinRoom' | 'leaveRoom'>
  redis: RedisClient
  subscriber: RedisClient
  /** The command connection's circuit breaker: every call goes through it. */
  link: RedisLink
}

/** A failed SUBSCRIBE on a connection that stays up is tried again this often. */
const SUBSCRIBE_RETRY_MS = 500
/** One publish call carries at most this many messages, or about this many bytes. */
const BATCH_MAX = 256
const BATCH_BYTES = 256 * 1024

interface Outgoing { payload: string, done: (received: boolean) => void, failed: (err: unknown) => void }

function mergeParked (entries: string[]): Handover | null {
  if (entries.length === 0) return null
  const merged: Handover = { baseline: [], held: [] }
  for (const entry of entries) {
    const handover = JSON.parse(entry) as Handover
    merged.baseline.push(...handover.baseline)
    merged.held.push(...handover.held)
  }
  return merged
}

export function createRedisMesh (opts: RedisMeshOptions): Mesh {
  const { redis, link } = opts
  const layout = createLayout({ redis, keyPrefix: opts.keyPrefix, deadline: () => link.deadline() })
  const { keys, call } = layout
  /** Every failure of the mesh becomes one typed error (a relay answers `unavailable`, REST 503). */
  const guard = <T>(op: () => Promise<T>): Promise<T> => link.run(op)
  const deadline = (): number => link.deadline()
  const ownedTtlS = instanceRecordTtlS(opts)

  const ownChannel = keys.channel(opts.node)
  let events: MeshEvents | null = null
  let subscribed = false
  let stopping = false

  /*
   * Messages to other instances leave once per event-loop turn: one script
   * call per target instance carries everything for it, in order. Redis then
   * runs one script and one deadline check per batch instead of per message,
   * and this process builds one command. To an instance that speaks instance
   * protocol 2 the batch is one payload (one PUBLISH, one delivery); to one
   * that speaks only version 1 (1.0.0) each message is its own PUBLISH.
   * Publishes therefore reach Redis after the commands issued in the same
   * turn (and to different instances grouped by target): no receiver reads
   * Redis state in answer to a bus message, which is what keeps that safe.
   */
  const outbox = new Map<string, Outgoing[]>()

  function publish (node: string, payload: string): Promise<boolean> {
    return new Promise((resolve, reject) => {
      // A flush empties the outbox: the first message after it schedules the next.
      if (outbox.size === 0) setImmediate(flush)
      const queue = outbox.get(node)
      const item = { payload, done: resolve, failed: reject }
      if (queue === undefined) outbox.set(node, [item])
      else queue.push(item)
    })
  }

  function flush (): void {
    for (const [node, queue] of outbox) {
      outbox.delete(node)
      let start = 0
      let bytes = 0
      for (let i = 0; i < queue.length; i++) {
        bytes += Buffer.byteLength((queue[i] as Outgoing).payload)
        if (i + 1 - start >= BATCH_MAX || bytes >= BATCH_BYTES || i === queue.length - 1) {
          publishBatch(node, queue.slice(start, i + 1))
          start = i + 1
          bytes = 0
        }
      }
    }
  }

  function publishBatch (node: string, batch: Outgoing[]): void {
    const payloads = batch.map(m => m.payload)
    const combined = batch.length > 1 && liveness.protocolOf(node) >= 2 ? [encodeBatch(payloads)] : payloads
    guard(() => layout.publish({ node, payloads: combined })).then((receivers) => {
      for (const m of batch) m.done(receivers > 0)
    }, (err: unknown) => {
      for (const m of batch) m.failed(err)
    })
  }

  /** Ends a session if `owner` owns it; null when it does not (or no longer exists). */
  const endSession = (peerId: string, owner: string) => layout.end({ peerId, owner, emptyTtl: opts.roomEmptyTtlS })

  const marker = new FleetMarker(() => {
    opts.log.error('redis lost its data (the fleet marker changed): rewriting this instance\'s sessions and rooms; no missing record is taken as ended meanwhile')
    events?.registryLost()
  }, opts.deadAfterMs)
  /** How long a lookup that could answer "no such session" waits for a restore in progress. */
  const RESTORE_WAIT_MS = 3000
  /**
   * A lookup whose answer may be "no such record": made after any restore in
   * progress, with the marker read alongside; a missing record read under an
   * untrusted marker is an error (unknown), never "ended".
   */
  async function believed<T> (read: () => Promise<T>, missing: (value: T) => boolean): Promise<T> {
    await marker.settled(RESTORE_WAIT_MS)
    /** The value, when it can be believed. */
    const look = async (): Promise<{ value: T } | null> => {
      const [current, value] = await Promise.all([redis.get(keys.fleetKey), read()])
      return !missing(value) || marker.check(current) ? { value } : null
    }
    let found = await look()
    // Rewritten here, but maybe not yet by the instance that owns it: look once more shortly.
    if (found === null && !marker.restoring && marker.doubtLeft() > 0) {
      await new Promise(resolve => setTimeout(resolve, Math.min(marker.doubtLeft(), 1000)))
      found = await look()
    }
    if (found === null) throw new StoreUnavailableError({ cause: new Error('redis lost its data; the record may be missing only for that') })
    return found.value
  }

  const liveness = createLiveness({
    ...opts,
    clock: opts.clock ?? systemClock,
    redis,
    keys,
    marker,
    endSession,
    onSessionsEnded: (ended) => events?.sessionsEnded(ended)
  })
  // Back from an outage: look at the marker at once (a restarted Redis may be empty).
  opts.link.onChange((healthy) => { if (healthy) liveness.beatNow() })

  // On a cluster the channel is sharded (SSUBSCRIBE), and its messages arrive as 'smessage'.
  const subscriber = opts.subscriber
  const subscribeOwn = (): Promise<unknown> => layout.subscribe(subscriber, ownChannel)
  const unsubscribeOwn = (): Promise<unknown> => layout.unsubscribe(subscriber, ownChannel)
  subscriber.on(layout.messageEvent, (channel: string, payload: string) => {
    if (channel !== ownChannel || events === null) return
    const messages = decodePayload(payload)
    if (messages === null) {
      opts.log.warn('dropped a malformed payload from another instance')
      return
    }
    for (const msg of messages) {
      if (msg === null) opts.log.warn('dropped a malformed message from another instance')
      else events.message(msg)
    }
  })
  // Subscribe on every (re)connection: ioredis replays only subscriptions that
  // once succeeded, and a first attempt fails while Redis is unreachable.
  const subscribe = (): void => {
    if (stopping) return
    subscribeOwn().then(() => { subscribed = !stopping }, (err: unknown) => {
      // A SUBSCRIBE that timed out on a live connection gets no reconnect to retry it: try again here.
      opts.log.warn({ error: brief(err) }, 'could not subscribe to this instance\'s channel yet; retrying')
      setTimeout(() => { if (!subscribed && opts.subscriber.status === 'ready') subscribe() }, SUBSCRIBE_RETRY_MS).unref()
    })
  }
  opts.subscriber.on('ready', subscribe)
  opts.subscriber.on('close', () => { subscribed = false })

  return {
    node: opts.node,

    get othersSeen (): boolean {
      return liveness.othersSeen
    },

    get liveNodes (): readonly string[] {
      return liveness.liveNodes
    },

    get reachable (): boolean {
      return subscribed
    },

    async start (handlers) {
      events = handlers
      if (opts.subscriber.status === 'ready') {
        await subscribeOwn().then(() => { subscribed = true }, () => {})
      }
      liveness.start()
    },

    send: (node, msg) => publish(node, encodeBus(msg)),

    readSession: (peerId) => guard(async () => {
      const record = await believed(() => redis.hgetall(keys.sessionKey(peerId)), r => r['secret'] === undefined)
      if (record['secret'] === undefined || record['instance'] === undefined) return null
      return { secret: record['secret'], room: record['room'] ?? '', node: record['instance'] }
    }),

    claimSession: (peerId, expectedHash, newHash) => guard(async () => {
      const claimed = await layout.claim({ peerId, expectedHash, newHash, instance: opts.node, ttl: opts.sessionTtlS, ownedTtl: ownedTtlS })
      if (claimed === null) return null
      return { ...claimed, roomId: claimed.roomId === '' ? null : claimed.roomId, parked: mergeParked(claimed.parked) }
    }),

    rotateSecret: (peerId, newHash) => guard(async () => { await call(rotateSecret, { session: keys.sessionKey(peerId) }, { hash: newHash, deadline: deadline() }) }),

    joinRoom: (roomId, peerId, maxPeers, secretHash) => opts.rooms.joinRoom(roomId, peerId, maxPeers, secretHash),

    leaveRoom: (roomId, peerId) => opts.rooms.leaveRoom(roomId, peerId),

    endSession: (peerId, owner = opts.node) => guard(async () => {
      await marker.settled(RESTORE_WAIT_MS)
      const ended = await endSession(peerId, owner)
      return ended === null ? null : { peerId, ...ended }
    }),

    ownerOf: (peerId) => guard(async () => await believed(() => redis.hget(keys.sessionKey(peerId), 'instance'), owner => owner === null)),

    ownersOf: (peerIds) => guard(async () => {
      // Each in its own slot on a cluster: one command each (ioredis pipelines them per node).
      const [current, ...owners] = await Promise.all([redis.get(keys.fleetKey), ...peerIds.map(peerId => redis.hget(keys.sessionKey(peerId), 'instance'))])
      if (!marker.check(current) || marker.restoring) return null
      return { owners: new Map(peerIds.map((peerId, i) => [peerId, owners[i] ?? null])), reapable: liveness.takeSilence() }
    }),

    restore: (entries) => guard(async () => {
      const ttl = opts.sessionTtlS
      const now = Date.now()
      await Promise.all(entries.map(async (e) => {
        const written = await call(restoreSession, { session: keys.sessionKey(e.peerId), binding: keys.bindingKey(e.peerId) },
          { secret: e.secret, roomId: e.roomId ?? '', instance: opts.node, epoch: e.epoch, ttl, deadline: deadline() })
        if (!written) return
        await redis.multi().sadd(keys.ownedKey(opts.node), e.peerId).expire(keys.ownedKey(opts.node), ownedTtlS).exec()
        if (e.roomId === null) return
        await call(restoreMember, { room: keys.roomKey(e.roomId), sockets: keys.socketsKey(e.roomId), peers: keys.peersKey(e.roomId) },
          { peerId: e.peerId, instance: opts.node, ttl, createdAt: now, deadline: deadline() })
      }))
      const current = await liveness.rewrite()
      if (current !== null) marker.adopt(current)
    }),

    park: (peerId, owner, handover) => guard(() => call(parkHandover, { session: keys.sessionKey(peerId), parked: keys.parkedKey(peerId) },
      { owner, ttl: opts.sessionTtlS, handover: JSON.stringify(handover), deadline: deadline() })),

    othersAlive: () => guard(async () => {
      const alive = await redis.zrangebyscore(keys.instancesKey, Date.now() - opts.deadAfterMs, '+inf')
      return alive.some(node => node !== opts.node)
    }),

    async stop () {
      stopping = true
      subscribed = false
      // Messages published before the unsubscribe took effect arrive before its reply.
      await unsubscribeOwn().catch(() => {})
    },

    async leave (left) {
      // Survivors end what is left after the grace (a resume claims it first).
      await liveness.stop(left.length > 0)
    }
  }
}
