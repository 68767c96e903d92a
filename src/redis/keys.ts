/*
 * Key model (protocol §4), every key under the configured prefix and with a TTL:
 *   room:<roomId>            hash { created_at }          ROOM_TTL_S from the last join
 *   room:<roomId>:sockets    set of member peerIds        same TTL as the room
 *   room:<roomId>:peers      hash peerId → instance id    same TTL as the room (routing)
 *   socket:<peerId>          string roomId                same TTL as the room
 *   session:<peerId>         hash { secret, room, instance, epoch }: a peer's resumable session
 *                            (SHA-256 of its resume secret, its room, the instance serving it,
 *                            how often it moved); written by the join script
 *   session:<peerId>:parked  list of JSON handovers: frames an exiting instance left for the
 *                            peer, taken by the claim on whichever instance it resumes on
 *   instance:<id>            pub/sub channel of one instance (not a key)
 *   instances                sorted set: instance id → last heartbeat (ms)
 *   instance:<id>:peers      set of the peer ids whose sessions that instance owns (TTL set
 *                            with every addition, refreshed by the heartbeat)
 *   instance-protocols       hash instance id → the instance protocols it speaks ("1,2"),
 *                            written with every heartbeat (same TTL as `instances`); an
 *                            instance without an entry speaks version 1 (1.0.0)
 *   reap:<id>                lock: which live instance cleans up after a dead one
 *   fleet                    string: a marker written once (NX) and refreshed by every
 *                            heartbeat; a different value means Redis lost its data (a
 *                            restart without persistence, a failover to an empty replica,
 *                            a FLUSHALL), so a missing record then proves nothing
 *   ratelimit:join:<ip>      sorted set of attempt times  one window
 *   ratelimit:api:<ip>       counter of REST requests     one window (API_RATE_LIMIT_WINDOW_S)
 *   conns:<ip>               hash instance id → that instance's connections and held sessions
 *                            from the IP (MAX_CONNECTIONS_PER_IP across the fleet); only live
 *                            instances' shares count, so a dead one's share lapses with it
 *   referrers:daily:<day>    hash ref → count             30 days; at most TRACK_MAX_REFS_PER_DAY
 *                            refs, later ones counted under `other`
 * The key names are built here and nowhere else: the scripts that touch them
 * (src/redis/scripts.ts) get every key in KEYS, never a prefix to build one.
 */

/**
 * Every key name of the Redis data model, under one prefix. On Redis Cluster
 * the names carry hash tags, so that the keys one script touches share a
 * slot: a room's three keys hash on the room id, a peer's binding, session
 * and parked handovers on the peer id, an instance's peer set and channel on
 * the instance id. On one Redis the names stay as they are.
 */
export function redisKeys (prefix: string, cluster = false) {
  const tag = cluster ? (id: string) => `{${id}}` : (id: string) => id
  return {
    roomKey: (roomId: string) => `${prefix}room:${tag(roomId)}`,
    socketsKey: (roomId: string) => `${prefix}room:${tag(roomId)}:sockets`,
    peersKey: (roomId: string) => `${prefix}room:${tag(roomId)}:peers`,
    bindingKey: (peerId: string) => `${prefix}socket:${tag(peerId)}`,
    sessionKey: (peerId: string) => `${prefix}session:${tag(peerId)}`,
    parkedKey: (peerId: string) => `${prefix}session:${tag(peerId)}:parked`,
    /** The sessions an instance owns (for cleaning up after it). */
    ownedKey: (instance: string) => `${prefix}instance:${tag(instance)}:peers`,
    /** Sharded pub/sub on a cluster: the channel lives on its instance's slot. */
    channel: (instance: string) => `${prefix}instance:${tag(instance)}`,
    instancesKey: `${prefix}instances`,
    /** Per instance: the instance protocols it speaks (comma-separated); none means 1.0.0's version 1. */
    instanceProtocolsKey: `${prefix}instance-protocols`,
    /** The fleet's marker: a value that changes only when Redis lost its data. */
    fleetKey: `${prefix}fleet`,
    reapKey: (instance: string) => `${prefix}reap:${instance}`,
    joinLimitKey: (ip: string) => `${prefix}ratelimit:join:${ip}`,
    /** Per client IP: each instance's count of its connections and held sessions (the fleet-wide cap). */
    connectionsKey: (ip: string) => `${prefix}conns:${ip}`,
    /** The REST limiter's counters: the namespace its store prefixes client keys with. */
    apiLimitNamespace: `${prefix}ratelimit:api:`,
    referrersKey: (day: string) => `${prefix}referrers:daily:${day}`
  }
}

/** The key names of one prefix (and mode). */
export type RedisKeys = ReturnType<typeof redisKeys>

/**
 * TTL of the instances set and of each instance's peer set: long enough to
 * outlive every session the instance recorded and the reaping after it.
 */
export function instanceRecordTtlS (o: { deadAfterMs: number, resumeGraceMs: number, sessionTtlS: number }): number {
  return Math.ceil(o.deadAfterMs * 4 / 1000) + Math.ceil(o.resumeGraceMs / 1000) + o.sessionTtlS
}
