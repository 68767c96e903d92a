import t from 'tap'
import { errorText, frame, frameLabels, parseFrame } from '../src/signaling/protocol'

/*
 * Reading client frames (src/signaling/protocol.ts, docs/protocol.md §3.4):
 * the error a client gets for each kind of bad frame, which correlation ids
 * are echoed back, and the labels of a frame dropped unread by the rate limit.
 */

t.test('a frame whose envelope is wrong: invalid_message, with its id echoed only when the id itself is valid', async (t) => {
  t.match(parseFrame(JSON.stringify({ type: '', id: 'x1' })), { ok: false, code: 'invalid_message', id: 'x1', message: /^envelope\/type: / })
  t.match(parseFrame(JSON.stringify({ type: 'ping', id: 'bad\nid' })), { ok: false, code: 'invalid_message', id: undefined })
  t.match(parseFrame(JSON.stringify({ type: 7, id: 42 })), { ok: false, code: 'invalid_message', id: undefined }, 'an id that is not a string is not echoed')
  const long = parseFrame(JSON.stringify({ type: 'ping', id: 'x'.repeat(65) }))
  t.match(long, { ok: false, code: 'invalid_message', id: undefined }, 'nor one over 64 characters')
  t.notMatch(JSON.stringify(long), 'xxxxxxxx', 'and the message does not echo the value')
})

t.test('the order of the checks: bad_json, the envelope, unknown_type, then the data', async (t) => {
  t.match(parseFrame('{'), { code: 'bad_json', message: errorText('bad_json') })
  t.match(parseFrame('null'), { code: 'bad_json' })
  t.match(parseFrame('[]'), { code: 'bad_json' })
  t.match(parseFrame(JSON.stringify({ type: 'fly', data: 1, id: 'u' })), { code: 'unknown_type', type: 'fly', id: 'u' })
  t.match(parseFrame(JSON.stringify({ type: 'join', data: {}, id: 'j' })), { code: 'invalid_message', type: 'join', id: 'j', message: /^data/ })
  t.same(parseFrame(JSON.stringify({ type: 'ping', id: 'p' })), { ok: true, type: 'ping', data: {}, id: 'p' }, 'ping may come without data')
  t.match(parseFrame(JSON.stringify({ type: 'join' })), { code: 'invalid_message', type: 'join' }, 'no other message may')
})

t.test('a frame dropped unread (rate limited) is answered with its type and id when they can be read', async (t) => {
  t.same(frameLabels('{nope'), {}, 'not JSON')
  t.same(frameLabels(JSON.stringify({ type: 'offer', id: 'bad\u0001' })), {}, 'a bad envelope: nothing echoed')
  t.same(frameLabels(JSON.stringify({ type: 'fly', id: 'f1' })), { type: undefined, id: 'f1' }, 'an unknown type is not echoed')
  t.same(frameLabels(JSON.stringify({ type: 'offer', data: {}, id: 'o1' })), { type: 'offer', id: 'o1' })
  t.same(frameLabels(JSON.stringify({ type: 'offer' })), { type: 'offer', id: undefined })
})

t.test('outbound frames carry the id only when there is one', async (t) => {
  t.equal(frame('pong', {}), '{"type":"pong","data":{}}')
  t.equal(frame('pong', {}, 'p1'), '{"type":"pong","data":{},"id":"p1"}')
})
