/*
 * The versions of the protocol between instances (bus messages and their
 * framing, channel names, the Redis data model, the scripts) that this
 * release speaks. Release N speaks N and N−1, so a rolling deploy from the
 * previous release (or a rollback to it) mixes two versions that understand
 * each other; CHANGELOG.md lists what each version changed. An instance
 * record that advertises nothing is version 1 (1.0.0 advertised nothing).
 * Neutral ground: the core (bus.ts) and the mesh (liveness, codec) read it.
 *
 *   1  1.0.0: one message per pub/sub payload (src/cluster/codec.ts)
 *   2  1.1.0: also several messages for one instance in one payload (a batch);
 *      everything else as in 1
 */
export const INSTANCE_PROTOCOLS: readonly number[] = [1, 2]
export const INSTANCE_PROTOCOL = Math.max(...INSTANCE_PROTOCOLS)
