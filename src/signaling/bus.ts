/*
 * The protocol between instances, apart from the transport that carries it
 * (the Redis mesh frames it with src/cluster/codec.ts; a single instance never
 * sends any). Like socket.io-redis-adapter's ClusterAdapter: message kinds
 * here, publishing in the mesh.
 *
 *   D  deliver a frame to listed peers of a room (a relay: one target; a broadcast:
 *      the origin's view of the members on that instance, plus any other local member)
 *   F  a relay was refused at the target's instance: tell its sender peer_not_found
 *   R  a relay was refused with another code (`unavailable`: it can no longer arrive in
 *      order, or an instance that lost the sender's session read it late): tell its sender,
 *      on whichever instance serves it now
 *   M  membership: `peerId` is now served by `node` ('' = left the room)
 *   T  `peerId` resumed on the origin: hand over what is held for it, then forward
 *   H  the handover: the frames held for a peer and where its inbound sequences stood
 *   L  leave the room on the peer's behalf (POST /api/leave_room on another instance)
 *
 * Every relayed frame carries a sequence number per sender → target pair
 * (with the sender session's epoch, which changes when the sender moves to
 * another instance), so the target's instance can order and de-duplicate
 * frames that reach it by two paths while a peer moves (see delivery.ts).
 */

/** Which versions of this protocol a release speaks: src/instance-protocol.ts. */
export { INSTANCE_PROTOCOL, INSTANCE_PROTOCOLS } from '../instance-protocol'

/** A frame on its way to one peer, as held, handed over and re-sent. */
export interface Envelope {
  /** The client frame, serialized once by the sender's instance. */
  frame: string
  /** Message type (metrics, and whether a refusal is reported to the sender). */
  type: string
  /** Sending peer ('' for frames the server itself originates). */
  from: string
  /** The client's correlation id of the relay ('' for none). */
  id: string
  /** Sender session epoch and per-pair sequence (seq 0: not sequenced, delivered as it comes). */
  epoch: number
  seq: number
  /** Instance of the sender, where a refusal goes. */
  origin: string
}

/**
 * Where a target's inbound sequences stood, per sender: the next expected,
 * the floor below which nothing is known, and the holes (skipped, may come late).
 */
export type Baseline = Array<[from: string, epoch: number, next: number, floor: number, holes: number[]]>

export type BusMessage =
  | { kind: 'D', origin: string, roomId: string, from: string, epoch: number, type: string, id: string, broadcast: boolean, targets: Array<[peerId: string, seq: number]>, frame: string }
  | { kind: 'F', origin: string, from: string, type: string, id: string }
  | { kind: 'R', origin: string, from: string, type: string, id: string, code: RefusalCode }
  | { kind: 'M', origin: string, roomId: string, peerId: string, node: string }
  | { kind: 'T', origin: string, peerId: string }
  | { kind: 'H', origin: string, peerId: string, baseline: Baseline, held: Envelope[] }
  | { kind: 'L', origin: string, peerId: string, roomId: string }

/** Codes an R message may carry. */
export type RefusalCode = 'unavailable' | 'peer_not_found' | 'outcome_unknown'

export type BusKind = BusMessage['kind']

/** The types whose refusal the sender hears about (peer_not_found); broadcasts reach whoever is there. */
export const RELAY_TYPES: ReadonlySet<string> = new Set(['offer', 'answer', 'ice-candidate'])
