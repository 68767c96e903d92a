import type { BusMessage, Envelope, RefusalCode } from './bus'
import type { Delivery } from './delivery'
import type { Forwards } from './forwards'
import type { Moves } from './moves'
import type { Session } from './session'
import type { SessionRegistry } from './registry'
import type { Router } from './router'

/*
 * Messages from other instances (src/signaling/bus.ts): deliveries to the
 * peers served here (or passed on to where they moved), refusals for our
 * senders, membership changes, releases and handovers, and leaves on request.
 */

export interface InboundContext {
  self: string
  registry: SessionRegistry
  delivery: Delivery
  router: Router
  moves: Moves
  forwards: Forwards
  post (node: string, msg: BusMessage): Promise<boolean>
  undeliverable (env: Envelope): void
  /** A relay of a sender of ours was refused elsewhere: tell it (here, or where it moved). */
  refused (peerId: string, code: RefusalCode, type: string, id: string): void
  leaveRoom (session: Session): Promise<void>
}

export function createInbound (ctx: InboundContext): (msg: BusMessage) => void {
  const { registry, delivery, router, moves } = ctx

  function deliver (msg: Extract<BusMessage, { kind: 'D' }>): void {
    const envFor = (seq: number): Envelope => ({ frame: msg.frame, type: msg.type, from: msg.from, id: msg.id, epoch: msg.epoch, seq, origin: msg.origin })
    // Built only when needed: most deliveries are one relay to one peer served here.
    const listed = msg.broadcast ? new Set<string>() : null
    let onward: Map<string, Array<[string, number]>> | null = null
    for (const [peerId, seq] of msg.targets) {
      listed?.add(peerId)
      const target = registry.get(peerId)
      if (target !== undefined && target.roomId === msg.roomId) {
        delivery.deliver(target, envFor(seq))
        continue
      }
      // The target's room is checked here, where it is served: the relay rule's other half.
      const node = target === undefined ? ctx.forwards.forwardTo(peerId) : undefined
      if (node === undefined) {
        ctx.undeliverable(envFor(seq))
        continue
      }
      onward ??= new Map()
      const group = onward.get(node)
      if (group === undefined) onward.set(node, [[peerId, seq]])
      else group.push([peerId, seq])
    }
    if (listed !== null) {
      // Members here the sender's instance did not know of yet.
      for (const member of registry.members(msg.roomId)) {
        if (!listed.has(member.peerId) && member.peerId !== msg.from) delivery.deliver(member, envFor(0))
      }
    }
    if (onward === null) return
    for (const [node, targets] of onward) {
      ctx.post(node, { ...msg, broadcast: false, targets }).then((received) => {
        if (!received) for (const [, seq] of targets) ctx.undeliverable(envFor(seq))
      })
    }
  }

  return (msg) => {
    // Never act on our own echo, except a delivery passed back to us: the
    // instance a target left forwards it with its origin kept (where a
    // refusal goes), and the target may have moved to the sender's instance.
    if (msg.origin === ctx.self && msg.kind !== 'D') return
    switch (msg.kind) {
      case 'D':
        deliver(msg)
        return
      case 'F':
        ctx.refused(msg.from, 'peer_not_found', msg.type, msg.id)
        return
      case 'R':
        ctx.refused(msg.from, msg.code, msg.type, msg.id)
        return
      case 'M':
        router.moved(msg.roomId, msg.peerId, msg.node)
        return
      case 'T':
        moves.release(msg.peerId, msg.origin)
        return
      case 'H': {
        const session = registry.get(msg.peerId)
        if (session !== undefined) moves.handedOver(session, { baseline: msg.baseline, held: msg.held })
        else for (const env of msg.held) ctx.undeliverable(env)
        return
      }
      case 'L': {
        const session = registry.get(msg.peerId)
        if (session !== undefined && session.roomId === msg.roomId) {
          ctx.leaveRoom(session).catch(() => { /* never fails */ })
        }
      }
    }
  }
}
