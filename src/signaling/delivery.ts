import type { Baseline, Envelope } from './bus'
import { skip, type Expected } from './inbox'
import type { Session } from './session'
import type { Clock, SignalingMetrics } from './types'
import type { LogLimiter } from './log-limiter'

/*
 * Inbound delivery to one peer: straight to its socket while connected, into
 * a bounded buffer while it is held for resume, behind a gate while a resume
 * from another instance waits for the old instance's handover, and in order
 * per sender even when frames reach it by two paths during a move.
 *
 * Ordering: every frame that crossed instances carries (epoch, seq) per
 * sender → target pair. The target's current instance remembers, per sender,
 * the next sequence it expects, a floor below which it knows nothing (a
 * baseline set by a first frame rather than by a handover) and the holes it
 * skipped. A frame below `next` that is below the floor or fills a hole was
 * never delivered here, but newer frames were: delivering it now would break
 * the per-pair order, so it is refused to its sender by id (`unavailable`:
 * not applied, safe to resend). A frame below `next` otherwise is a repeat
 * (dropped). So is a frame of a sender's older epoch once a newer one has
 * arrived: refused, never delivered after the newer frames (a frozen or
 * partitioned instance waking up late is where such frames come from). A
 * frame ahead of a gap waits for the gap to fill, but only shortly after a
 * move (when a forwarded frame may still be on its way by the longer path)
 * and at most GAP_WAIT_MS.
 */

/** How long after a handover frames ahead of a gap wait for the missing one. */
export const RECONCILE_MS = 3000
export const GAP_WAIT_MS = 1000
/** How often a socket with a full buffer is checked for room while frames wait for it. */
const PUMP_MS = 10
export interface DeliveryPorts {
  clock: Clock
  metrics: SignalingMetrics
  resumeBufferMax: number
  resumeBufferBytes: number
  /** Bytes the socket may buffer for the client; beyond it frames wait in `held` until it drains. */
  maxBufferedBytes: number
  warnings: LogLimiter
  /** A frame that will never reach its target: its sender hears peer_not_found (relays only). */
  undeliverable (env: Envelope): void
  /** A frame that can no longer arrive in order (newer ones from its sender were delivered): its sender hears `unavailable`. */
  outOfOrder (env: Envelope): void
}

export function createDelivery (ports: DeliveryPorts) {
  const { clock, metrics } = ports

  function emit (session: Session, env: Envelope): void {
    const conn = session.conn
    if (conn !== null && conn.writable && session.inbox.held.length === 0 && conn.transport.bufferedAmount <= ports.maxBufferedBytes) {
      conn.transport.send(env.frame)
      metrics.messageOut(env.type)
      return
    }
    // Away, replaying, or reading slowly: it waits in the bounded buffer, and
    // goes out as the socket drains. A slow reader is not cut loose: that
    // would throw away what its socket buffered, frames already accepted.
    hold(session, env)
    if (conn !== null && conn.writable) pump(session)
  }

  function hold (session: Session, env: Envelope): void {
    const bytes = Buffer.byteLength(env.frame)
    if (session.inbox.held.length >= ports.resumeBufferMax || session.inbox.heldBytes + bytes > ports.resumeBufferBytes) {
      // Refuse the newest rather than drop the oldest: what was accepted stays a gap-free prefix.
      const skipped = ports.warnings.take('resume buffer full')
      if (skipped !== null) session.log.warn({ limit: ports.resumeBufferMax, limitBytes: ports.resumeBufferBytes, skipped }, 'resume buffer full, frame refused')
      ports.undeliverable(env)
      return
    }
    session.inbox.held.push(env)
    session.inbox.heldBytes += bytes
  }

  /**
   * Sends what is held while the socket has room, then checks again shortly:
   * a replay of a full buffer must not overflow the connection it resumed on.
   */
  function pump (session: Session): void {
    const conn = session.conn
    if (session.inbox.pumpTimer !== null || conn === null) return
    while (session.inbox.held.length > 0 && conn.writable) {
      if (conn.transport.bufferedAmount > ports.maxBufferedBytes) {
        session.inbox.pumpTimer = clock.setTimeout(() => {
          session.inbox.pumpTimer = null
          pump(session)
        }, PUMP_MS)
        return
      }
      const env = session.inbox.held.shift() as Envelope
      session.inbox.heldBytes -= Buffer.byteLength(env.frame)
      conn.transport.send(env.frame)
      metrics.messageOut(env.type)
    }
  }

  function sequenced (session: Session, env: Envelope): void {
    const expected = session.inbox.seqFrom?.get(env.from)
    if (expected === undefined || env.epoch > expected.epoch) {
      // First frame from this sender (or from its new incarnation): it sets the baseline.
      session.inbox.seqFrom ??= new Map()
      session.inbox.seqFrom.set(env.from, { epoch: env.epoch, next: env.seq + 1, floor: env.seq, holes: null, emitted: env.seq })
      session.inbox.gaps?.delete(env.from)
      emit(session, env)
      return
    }
    if (env.epoch < expected.epoch) {
      // Sent before the sender moved and overtaken by its newer frames.
      ports.outOfOrder(env)
      return
    }
    if (env.seq < expected.next) {
      if (env.seq < expected.floor || expected.holes?.delete(env.seq) === true) ports.outOfOrder(env)
      else metrics.duplicate()
      return
    }
    if (env.seq > expected.next) {
      if (clock.now() < session.inbox.reconcileUntil) {
        waitForGap(session, env)
        return
      }
      if (session.inbox.gaps?.has(env.from) === true) {
        // Reconciliation is over: what waited behind the gap goes out first,
        // in order (the gap is given up on), then this frame is judged against
        // it. Skipping straight to this one would leave the waiting frames
        // below `next`, to be taken for repeats and dropped unannounced.
        releaseGaps(session, env.from, expected, true)
        sequenced(session, env)
        return
      }
      skip(expected, expected.next, env.seq)
    }
    expected.next = env.seq + 1
    expected.emitted = env.seq
    emit(session, env)
    releaseGaps(session, env.from, expected, false)
  }

  function waitForGap (session: Session, env: Envelope): void {
    session.inbox.gaps ??= new Map()
    let queue = session.inbox.gaps.get(env.from)
    if (queue === undefined) {
      queue = []
      session.inbox.gaps.set(env.from, queue)
    }
    if (queue.some(e => e.seq === env.seq)) {
      metrics.duplicate()
      return
    }
    queue.push(env)
    queue.sort((a, b) => a.seq - b.seq)
    session.inbox.gapTimer ??= clock.setTimeout(() => {
      session.inbox.gapTimer = null
      for (const [from, expected] of session.inbox.seqFrom ?? []) releaseGaps(session, from, expected, true)
    }, GAP_WAIT_MS)
  }

  /** Delivers what waited behind a gap: what is now in order, or (`force`, after the wait) everything. */
  function releaseGaps (session: Session, from: string, expected: Expected, force: boolean): void {
    const queue = session.inbox.gaps?.get(from)
    if (queue === undefined) return
    while (queue.length > 0) {
      const head = queue[0] as Envelope
      if (head.seq < expected.next) {
        queue.shift()
        metrics.duplicate()
        continue
      }
      if (head.seq > expected.next && !force) break
      queue.shift()
      if (head.seq > expected.next) skip(expected, expected.next, head.seq)
      expected.next = head.seq + 1
      expected.emitted = head.seq
      emit(session, head)
    }
    if (queue.length === 0) session.inbox.gaps?.delete(from)
  }

  function takeHeld (session: Session): Envelope[] {
    const out = [...session.inbox.held, ...(session.inbox.pending ?? [])]
    for (const queue of session.inbox.gaps?.values() ?? []) out.push(...queue)
    session.inbox.held = []
    session.inbox.heldBytes = 0
    if (session.inbox.pumpTimer !== null) clock.clearTimeout(session.inbox.pumpTimer)
    session.inbox.pumpTimer = null
    session.inbox.pending = null
    session.inbox.gaps = null
    if (session.inbox.gapTimer !== null) clock.clearTimeout(session.inbox.gapTimer)
    session.inbox.gapTimer = null
    return out
  }

  function deliver (session: Session, env: Envelope): void {
    if (session.inbox.pending !== null) session.inbox.pending.push(env)
    else if (env.seq > 0) sequenced(session, env)
    else emit(session, env)
  }

  return {
    deliver,

    /** Closes the gate: inbound frames wait until `openGate` (a resume from another instance is settling). */
    closeGate (session: Session): void {
      session.inbox.pending ??= []
    },

    /**
     * Applies a handover (frames the previous instance held, where its
     * sequences stood), then lets through what waited at the gate, in order.
     */
    openGate (session: Session, handover: { baseline: Baseline, held: Envelope[] } | null): void {
      const pending = session.inbox.pending ?? []
      session.inbox.pending = null
      session.inbox.reconcileUntil = clock.now() + RECONCILE_MS
      if (handover !== null) {
        for (const [from, epoch, next, floor, holes] of handover.baseline) {
          const mine = session.inbox.seqFrom?.get(from)
          if (mine === undefined || epoch > mine.epoch || (epoch === mine.epoch && next > mine.next)) {
            session.inbox.seqFrom ??= new Map()
            session.inbox.seqFrom.set(from, { epoch, next, floor, holes: holes.length === 0 ? null : new Set(holes), emitted: 0 })
          }
        }
        // Accepted by the previous instance already: in order, no second check.
        for (const env of handover.held) {
          const expected = env.seq > 0 ? session.inbox.seqFrom?.get(env.from) : undefined
          if (expected !== undefined && expected.epoch === env.epoch) expected.emitted = Math.max(expected.emitted, env.seq)
          emit(session, env)
        }
      }
      // What waited at the gate came by several paths (local senders, the
      // router's re-routed frames, other instances): in sequence per sender.
      const bySender = new Map<string, Envelope[]>()
      for (const env of pending) {
        const list = bySender.get(env.from)
        if (list === undefined) bySender.set(env.from, [env])
        else list.push(env)
      }
      for (const list of bySender.values()) {
        list.sort((a, b) => a.epoch - b.epoch || a.seq - b.seq)
        for (const env of list) deliver(session, env)
      }
    },

    /**
     * A handover that came after the gate had opened without it (the old
     * instance was frozen or cut off): its frames were taken from the old
     * instance's buffer exactly once, and go through the sequence check, so
     * what is still in order is delivered and what newer frames overtook is
     * refused to its sender, never delivered out of order.
     */
    lateHandover (session: Session, held: Envelope[]): void {
      for (const env of held) {
        const expected = env.seq > 0 ? session.inbox.seqFrom?.get(env.from) : undefined
        if (session.inbox.pending !== null || expected === undefined || env.epoch > expected.epoch) {
          deliver(session, env)
          continue
        }
        // Taken from the old instance's buffer once, so never a repeat: in
        // order unless a newer frame of its sender already went out here.
        if (env.epoch < expected.epoch || env.seq <= expected.emitted) {
          ports.outOfOrder(env)
          continue
        }
        expected.emitted = env.seq
        // What it skips may still come, by the forwarding path: a hole, refused then, never taken for a repeat.
        if (env.seq > expected.next) skip(expected, expected.next, env.seq)
        if (env.seq >= expected.next) expected.next = env.seq + 1
        expected.holes?.delete(env.seq)
        emit(session, env)
      }
    },

    /** Sends what was held while the peer was away (right after its welcome), as the socket drains. */
    flushHeld (session: Session): number {
      const count = session.inbox.held.length
      pump(session)
      return count
    },

    /** Everything this session still holds, in order: for a handover to another instance. */
    takeHeld,

    /** The session is over: what it held never reaches it (senders of relays hear peer_not_found). */
    discard (session: Session): void {
      for (const env of takeHeld(session)) ports.undeliverable(env)
    }
  }
}

export type Delivery = ReturnType<typeof createDelivery>
