/*
 * Messages between instances, published to the target instance's channel.
 * A line-based format: fields are ids and type names (no newlines, by their
 * schemas) and the last field is a client frame that JSON.stringify already
 * produced (JSON never contains a raw newline), so a relay is forwarded
 * without parsing or re-serialising the client's message.
 *
 *   R origin to roomId from type id frame     relay to a peer (roomId: the sender's room)
 *   F origin to type id                       relay refused at the target: tell the sender
 *   B origin roomId except type frame         broadcast to my members of the room
 *   M origin roomId peerId instance           membership: peer now on instance ('' = left)
 *   T origin peerId                           the peer resumed on `origin`: release it
 *   H origin peerId frame…                    frames held for a peer that moved to you
 *   L origin peerId roomId                    leave on the peer's behalf (POST /api/leave_room)
 */

export type BusMessage =
  | { kind: 'R', origin: string, to: string, roomId: string, from: string, type: string, id: string, frame: string }
  | { kind: 'F', origin: string, to: string, type: string, id: string }
  | { kind: 'B', origin: string, roomId: string, except: string, type: string, frame: string }
  | { kind: 'M', origin: string, roomId: string, peerId: string, instance: string }
  | { kind: 'T', origin: string, peerId: string }
  | { kind: 'H', origin: string, peerId: string, frames: string[] }
  | { kind: 'L', origin: string, peerId: string, roomId: string }

export function encodeBus (msg: BusMessage): string {
  switch (msg.kind) {
    case 'R': return `R\n${msg.origin}\n${msg.to}\n${msg.roomId}\n${msg.from}\n${msg.type}\n${msg.id}\n${msg.frame}`
    case 'F': return `F\n${msg.origin}\n${msg.to}\n${msg.type}\n${msg.id}`
    case 'B': return `B\n${msg.origin}\n${msg.roomId}\n${msg.except}\n${msg.type}\n${msg.frame}`
    case 'M': return `M\n${msg.origin}\n${msg.roomId}\n${msg.peerId}\n${msg.instance}`
    case 'T': return `T\n${msg.origin}\n${msg.peerId}`
    case 'H': return [`H\n${msg.origin}\n${msg.peerId}`, ...msg.frames].join('\n')
    case 'L': return `L\n${msg.origin}\n${msg.peerId}\n${msg.roomId}`
  }
}

/** Splits off `count` newline-separated fields; the rest of the payload is the last element. */
function fields (payload: string, count: number): string[] | null {
  const out: string[] = []
  let start = 0
  for (let i = 0; i < count; i++) {
    const end = payload.indexOf('\n', start)
    if (end < 0) return i === count - 1 ? [...out, payload.slice(start)] : null
    out.push(payload.slice(start, end))
    start = end + 1
  }
  out.push(payload.slice(start))
  return out
}

/** Parses a payload from another instance; null for anything malformed (dropped by the caller). */
export function decodeBus (payload: string): BusMessage | null {
  switch (payload[0]) {
    case 'R': {
      const f = fields(payload, 7)
      if (f === null || f.length !== 8) return null
      return { kind: 'R', origin: f[1] as string, to: f[2] as string, roomId: f[3] as string, from: f[4] as string, type: f[5] as string, id: f[6] as string, frame: f[7] as string }
    }
    case 'F': {
      const f = payload.split('\n')
      if (f.length !== 5) return null
      return { kind: 'F', origin: f[1] as string, to: f[2] as string, type: f[3] as string, id: f[4] as string }
    }
    case 'B': {
      const f = fields(payload, 5)
      if (f === null || f.length !== 6) return null
      return { kind: 'B', origin: f[1] as string, roomId: f[2] as string, except: f[3] as string, type: f[4] as string, frame: f[5] as string }
    }
    case 'M': {
      const f = payload.split('\n')
      if (f.length !== 5) return null
      return { kind: 'M', origin: f[1] as string, roomId: f[2] as string, peerId: f[3] as string, instance: f[4] as string }
    }
    case 'T': {
      const f = payload.split('\n')
      if (f.length !== 3) return null
      return { kind: 'T', origin: f[1] as string, peerId: f[2] as string }
    }
    case 'H': {
      const f = payload.split('\n')
      if (f.length < 3) return null
      return { kind: 'H', origin: f[1] as string, peerId: f[2] as string, frames: f.slice(3) }
    }
    case 'L': {
      const f = payload.split('\n')
      if (f.length !== 4) return null
      return { kind: 'L', origin: f[1] as string, peerId: f[2] as string, roomId: f[3] as string }
    }
    default:
      return null
  }
}
