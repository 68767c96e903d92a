import { frame } from './protocol'
import type { BusMessage, Envelope } from './bus'
import type { Delivery } from './delivery'
import type { Forwards } from './forwards'
import type { EndedSession, Handover, Mesh } from './mesh'
import type { SessionRegistry } from './registry'
import type { Router } from './router'
import type { Session } from './session'
import { issueToken, secretMatches, splitToken } from './tokens'
import type { Clock, Logger, SignalingMetrics } from './types'

/*
 * Sessions moving between instances. The new instance claims the session in
 * the registry (atomically, proving the token), announces where the peer is
 * served now, and asks the old instance to release it; the old instance hands
 * over what it held (H) and passes on what still arrives by stale routes. The
 * resumed session's inbound frames wait at a gate until the handover is in
 * (or HANDOVER_WAIT_MS passed, or the old instance is gone).
 */

/** How long a resumed session waits for the previous instance's handover before going on without it. */
export const HANDOVER_WAIT_MS = 2000

export interface MovesContext {
  mesh: Mesh
  registry: SessionRegistry
  delivery: Delivery
  router: Router
  forwards: Forwards
  clock: Clock
  metrics: Pick<SignalingMetrics, 'moved'>
  log: Logger
  /** Sends to another instance, resolving whether it received it (never rejects). */
  post (node: string, msg: BusMessage): Promise<boolean>
  /** A frame that will never arrive: its relay sender hears peer_not_found. */
  undeliverable (env: Envelope): void
  /** Tells the room's other instances where a member is served now. */
  announce (roomId: string, peerId: string, node: string): void
}

export function createMoves (ctx: MovesContext) {
  const { mesh, registry, delivery, router, forwards, clock } = ctx
  const self = mesh.node

  /** The handover arrived (or its wait timed out): frames flow to the resumed session, in order. */
  function handedOver (session: Session, handover: Handover | null): void {
    const wait = session.handoverArrived()
    if (wait === undefined) {
      delivery.lateHandover(session, handover?.held ?? [])
      return
    }
    const parked = wait.parked
    const merged = parked === null ? handover : handover === null ? parked : { baseline: [...parked.baseline, ...handover.baseline], held: [...parked.held, ...handover.held] }
    delivery.openGate(session, merged)
  }

  /**
   * A claim that failed: the session is not served here. Frames that local
   * senders relayed to it meanwhile go back to the router (the peer is still
   * where it was). When the outcome is unknown (the store did not answer), the
   * claim may have been applied: end the session in the store if this instance
   * turns out to own it, so it is not orphaned.
   */
  function abandon (session: Session, unknownOutcome: boolean): void {
    const roomId = session.roomId
    const waiting = delivery.takeHeld(session)
    registry.letGo(session)
    for (const env of waiting) {
      const sender = env.origin === self ? registry.get(env.from) : undefined
      const rerouted = roomId !== null && sender !== undefined && sender.roomId === roomId &&
        router.relay(roomId, session.peerId, env)
      if (!rerouted) ctx.undeliverable(env)
    }
    if (!unknownOutcome) return
    let attempts = 0
    const cleanUp = (): void => {
      mesh.endSession(session.peerId).then((ended) => {
        if (ended === null || ended.roomId === '') return
        session.log.info('a failed resume had taken the session over; ended it')
        gone([ended])
      }, () => {
        if (++attempts < 10) clock.setTimeout(cleanUp, 1000)
      })
    }
    cleanUp()
  }

  /** Sessions ended elsewhere (a reaped instance, a failed claim): tell their rooms, here and on other instances. */
  function gone (ended: EndedSession[]): void {
    for (const { peerId, roomId, remaining } of ended) {
      const text = frame('peer-disconnected', { peerId })
      const env: Envelope = { frame: text, type: 'peer-disconnected', from: peerId, id: '', epoch: 0, seq: 0, origin: self }
      router.moved(roomId, peerId, '')
      for (const member of registry.members(roomId)) if (member.peerId !== peerId) delivery.deliver(member, env)
      const others = new Set(remaining.map(m => m.instance).filter(node => node !== self))
      for (const node of others) {
        ctx.post(node, { kind: 'M', origin: self, roomId, peerId, node: '' })
        ctx.post(node, { kind: 'D', origin: self, roomId, from: peerId, epoch: 0, type: 'peer-disconnected', id: '', broadcast: true, targets: [], frame: text })
      }
    }
  }

  return {
    handedOver,
    gone,

    /** The peer resumed on `node`: hand over what is held for it and pass on what still arrives. */
    release (peerId: string, node: string): void {
      const session = registry.get(peerId)
      if (session === undefined || session.moved) {
        // Nothing held here: say so at once, so the new owner does not wait.
        ctx.post(node, { kind: 'H', origin: self, peerId, baseline: [], held: [] })
        return
      }
      session.log.info({ to: node }, 'session resumed on another instance')
      ctx.metrics.moved('out')
      const held = delivery.takeHeld(session)
      const baseline = session.inbox.baseline()
      const roomId = session.roomId
      const conn = session.conn
      registry.letGo(session)
      if (roomId !== null) router.moved(roomId, peerId, node)
      forwards.set(peerId, node)
      conn?.end('replaced')
      ctx.post(node, { kind: 'H', origin: self, peerId, baseline, held }).then((received) => {
        if (!received) for (const env of held) ctx.undeliverable(env)
      })
    },

    /** A token this instance does not hold: ask the mesh, and take the session over if it is genuine. */
    async resume (token: string, ip: string): Promise<{ session: Session, token: string } | null> {
      const parts = splitToken(token)
      if (parts === null || registry.has(parts.peerId)) return null
      const record = await mesh.readSession(parts.peerId)
      if (record === null || !secretMatches(parts.secret, record.secret)) return null

      const issued = issueToken(parts.peerId)
      const session = registry.create(parts.peerId, issued.hash, ip)
      // Frames for it wait from now until the previous instance's handover is in.
      delivery.closeGate(session)
      // Bound here (local senders' frames wait at the gate), but routes stay
      // as they are until the claim has succeeded.
      if (record.room !== '') registry.bind(session, record.room)
      let claimed
      try {
        claimed = await mesh.claimSession(parts.peerId, record.secret, issued.hash.toString('hex'))
      } catch (err) {
        abandon(session, true)
        throw err
      }
      if (claimed === null) {
        abandon(session, false)
        return null
      }
      session.claimed(claimed.epoch)
      if (claimed.previous !== self) ctx.metrics.moved('in')
      if (claimed.roomId !== session.roomId) {
        registry.unbind(session)
        if (claimed.roomId !== null) registry.bind(session, claimed.roomId)
      }
      if (claimed.roomId !== null) {
        router.learnRoom(claimed.roomId, claimed.members)
        // Announced before the peer is greeted: whatever it sends next travels behind this.
        ctx.announce(claimed.roomId, session.peerId, self)
      }
      const previousAlive = claimed.previous !== self && await ctx.post(claimed.previous, { kind: 'T', origin: self, peerId: session.peerId })
      if (previousAlive) {
        session.awaitHandover(HANDOVER_WAIT_MS, claimed.parked, () => {
          session.log.warn({ previous: claimed.previous }, 'no handover from the previous instance in time; going on without it')
          delivery.openGate(session, claimed.parked)
        })
      } else {
        delivery.openGate(session, claimed.parked)
      }
      return { session, token: issued.token }
    },

    /**
     * This instance is exiting: what it still holds for its sessions, and the
     * frames waiting for peers whose instance vanished, are parked in the
     * registry for the claim on whichever instance those peers resume on (or
     * sent to that instance if a peer already moved).
     */
    async parkAll (sessions: Session[]): Promise<void> {
      const park = async (peerId: string, owner: string, handover: Handover): Promise<void> => {
        if (handover.held.length === 0) return
        const movedTo = await mesh.park(peerId, owner, handover).catch(() => null)
        if (movedTo !== null && movedTo !== owner) await ctx.post(movedTo, { kind: 'H', origin: self, peerId, ...handover })
      }
      await Promise.all(sessions.map(session => park(session.peerId, self, { baseline: session.inbox.baseline(), held: delivery.takeHeld(session) })))
      await Promise.all(router.takeWaiting().map(({ peerId, node, frames }) => park(peerId, node, { baseline: [], held: frames })))
    }
  }
}

export type Moves = ReturnType<typeof createMoves>
