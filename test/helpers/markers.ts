import type { Frame, TestClient } from './ws'

/*
 * Absence checks ("x never received y") rest on an event, not a sleep: a
 * sleep that is too short makes them pass whatever the server does. The
 * events used are two ordering guarantees: frames from one sender to one
 * target arrive in the order sent, on one instance and across instances
 * (docs/protocol.md §3.3), and the server handles one connection's messages
 * one at a time, in order (so a `pong` comes after anything the messages
 * before the `ping` sent back to that connection).
 */

const RELAY_TYPES = ['offer', 'answer', 'ice-candidate']

/** The end-of-candidates relay that `flushPath` sends as a marker. */
function isMarkerFrom (from: TestClient): (f: Frame) => boolean {
  return f => f.type === 'ice-candidate' && f.data?.candidate === null && f.data?.from === from.peerId
}

/**
 * Sends a marker relay from `from` to `to` (an end-of-candidates
 * ice-candidate, harmless to any session) and waits until it is in. Once it
 * is, everything `from` sent `to` before it has arrived too. The two must
 * share a room, and the sender's instance must already know where the target
 * is served (its `ready` has reached the sender).
 */
export async function flushPath (from: TestClient, to: TestClient, timeoutMs = 3000): Promise<void> {
  const isMarker = isMarkerFrom(from)
  const seen = to.inbox.filter(isMarker).length
  from.send('ice-candidate', { peerId: to.peerId, candidate: null })
  const deadline = Date.now() + timeoutMs
  while (to.inbox.filter(isMarker).length <= seen) {
    if (Date.now() > deadline) {
      const refused = from.all('error').map(f => f.data.code).join(',')
      throw new Error(`the marker from ${from.peerId} to ${to.peerId} did not arrive (sender's errors: ${refused || 'none'})`)
    }
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** Relay frames a client received, not counting `flushPath`'s markers. */
export function relaysIn (client: TestClient): Frame[] {
  return client.inbox.filter(f => RELAY_TYPES.includes(f.type) && !(f.type === 'ice-candidate' && f.data?.candidate === null))
}
