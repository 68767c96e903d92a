import t from 'tap'
import { decodeBus, encodeBus } from '../src/cluster/codec'
import type { BusMessage } from '../src/signaling/bus'

/*
 * Bus messages in a Redis pub/sub payload (src/cluster/codec.ts): every kind
 * survives the trip, no field a client influences can forge a second message
 * or end the header early, and anything malformed is dropped (null).
 */

const env = { frame: '{"type":"offer"}', type: 'offer', from: 'p1', id: 'o1', epoch: 2, seq: 7, origin: 'n1' }
const MESSAGES: BusMessage[] = [
  { kind: 'D', origin: 'n1', roomId: 'r', from: 'p1', epoch: 3, type: 'offer', id: 'o1', broadcast: false, targets: [['p2', 4]], frame: '{"type":"offer","data":{"sdp":"v=0\\r\\n"}}' },
  { kind: 'D', origin: 'n1', roomId: 'r', from: 'p1', epoch: 0, type: 'initiator-online', id: '', broadcast: true, targets: [], frame: 'line one\nline two' },
  { kind: 'F', origin: 'n2', from: 'p1', type: 'offer', id: 'o1' },
  { kind: 'R', origin: 'n2', from: 'p1', type: 'answer', id: 'a1', code: 'unavailable' },
  { kind: 'R', origin: 'n2', from: 'p1', type: 'answer', id: 'a1', code: 'outcome_unknown' },
  { kind: 'M', origin: 'n1', roomId: 'r', peerId: 'p1', node: '' },
  { kind: 'T', origin: 'n3', peerId: 'p1' },
  { kind: 'H', origin: 'n1', peerId: 'p2', baseline: [['p1', 2, 8, 3, [5, 6]]], held: [env] },
  { kind: 'L', origin: 'n2', peerId: 'p1', roomId: 'r' }
]

t.test('every kind of message survives the trip unchanged', async (t) => {
  for (const msg of MESSAGES) t.same(decodeBus(encodeBus(msg)), msg, `${msg.kind}`)
})

t.test('ids and types a client chose cannot end the header early or forge a message', async (t) => {
  const sneaky = '"]\n["T","n9","victim'
  const msg: BusMessage = { kind: 'F', origin: 'n2', from: 'p1', type: sneaky, id: `x\n${sneaky}` }
  const payload = encodeBus(msg)
  t.equal(payload.includes('\n'), false, 'no raw newline in a header')
  t.same(decodeBus(payload), msg)
  const relay: BusMessage = { kind: 'D', origin: 'n1', roomId: 'r', from: 'p1', epoch: 1, type: 'offer', id: sneaky, broadcast: false, targets: [['p2', 1]], frame: '{}' }
  t.equal(encodeBus(relay).split('\n').length, 2, 'a relay: one header line, then the frame')
  t.same(decodeBus(encodeBus(relay)), relay)
})

t.test('a malformed payload is dropped', async (t) => {
  const cases: Array<[string, string]> = [
    ['not JSON', '["F","n2"'],
    ['not JSON before the frame', '{\n{}'],
    ['an unknown kind', '["X","n1"]'],
    ['a field of the wrong type', '["T","n1",7]'],
    ['a negative sequence', '["D","n1","r","p1",0,"offer","",false,[["p2",-1]]]\n{}'],
    ['an unknown refusal code', '["R","n2","p1","offer","o1","nope"]'],
    ['a relay without its frame', '["D","n1","r","p1",0,"offer","",false,[]]'],
    ['a frame after a message that carries none', '["T","n1","p1"]\n{}'],
    ['a held envelope missing a field', JSON.stringify(['H', 'n1', 'p2', [], [{ ...env, seq: undefined }]])]
  ]
  for (const [what, payload] of cases) t.equal(decodeBus(payload), null, what)
})
