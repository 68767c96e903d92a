import t, { type Test } from 'tap'
import { serveApp, STORE_MODES } from './helper'
import { connect, joinRoom, quietly } from './helpers/ws'
import { flushPath, relaysIn } from './helpers/markers'
import type { EnvSource } from '../src/config'

const OFFER = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' }
const ANSWER = { type: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n' }
const CANDIDATE = { candidate: 'candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host', sdpMid: '0', sdpMLineIndex: 0 }

for (const mode of STORE_MODES) {
  t.test(`/ws protocol on the ${mode} store`, async (t) => {
    const setup = (t: Test, env: EnvSource = {}) => serveApp(t, mode, env)

    t.test('welcome is the first frame and carries identity, protocol and ICE servers', async (t) => {
      const { ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      const w = a.welcome
      t.equal(w?.type, 'welcome')
      t.match(w?.data, { protocol: 1, heartbeatMs: 25000, iceServers: [{ urls: ['stun:stun.l.google.com:19302'] }] })
      t.match(a.peerId, /^[A-Za-z0-9_-]{22,}$/, 'peerId: URL-safe, 128 random bits')
      t.not(a.peerId, b.peerId)
      t.ok(a.token.length >= 40, 'resumeToken carries at least 128 secret bits')
      t.not(a.token, b.token)
    })

    t.test('join: success reply with the exact message, peers, and ready to the others', async (t) => {
      const { app, ws } = await setup(t)
      await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'r1' } })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      const ra = await a.request('join', { roomId: 'r1' }, 'joinResponse')
      t.same(ra.data, { success: true, message: 'Successfully joined room', roomId: 'r1', peerId: a.peerId, peers: [] })
      const rb = await b.request('join', { roomId: 'r1' }, 'joinResponse')
      t.same(rb.data.peers, [a.peerId], 'peers lists the other members')
      t.same((await a.next('ready')).data, { peerId: b.peerId })
      // b's join (and any ready it sent) is done before b's next message is handled.
      await b.request('ping', {}, 'pong')
      t.equal(b.all('ready').length, 0, 'the joiner gets no ready about itself')
    })

    t.test('join failures carry the compatibility strings and codes', async (t) => {
      const { app, ws } = await setup(t, { ROOM_MAX_PEERS: '2' })
      const a = await connect(t, ws)
      const missing = await a.request('join', { roomId: 'ghost' }, 'joinResponse')
      t.same(missing.data, { success: false, message: 'Room does not exist', roomId: 'ghost', code: 'room_not_found' })

      const b = await connect(t, ws)
      const c = await connect(t, ws)
      await joinRoom(app, 'small', a, b)
      const full = await c.request('join', { roomId: 'small' }, 'joinResponse')
      t.match(full.data, { success: false, code: 'room_full', roomId: 'small' })

      await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'other' } })
      const second = await a.request('join', { roomId: 'other' }, 'joinResponse')
      t.same(second.data, { success: false, message: 'Socket is already bound to another room', roomId: 'other', code: 'already_in_room' })
    })

    t.test('join rate limit per IP; a same-room rejoin is not limited and re-announces ready', async (t) => {
      const { app, ws } = await setup(t, { DISABLE_JOIN_RATE_LIMIT: 'false', JOIN_RATE_LIMIT_MAX: '2', JOIN_RATE_LIMIT_WINDOW_S: '5' })
      await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'rl' } })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      const c = await connect(t, ws)
      t.equal((await a.request('join', { roomId: 'rl' }, 'joinResponse')).data.success, true)
      t.equal((await b.request('join', { roomId: 'rl' }, 'joinResponse')).data.success, true)
      const limited = await c.request('join', { roomId: 'rl' }, 'joinResponse')
      t.equal(limited.data.success, false)
      t.equal(limited.data.code, 'rate_limited')
      t.match(limited.data.message, /^Rate limit exceeded\. Try again in \d+s\. Attempts left: 0\.$/)

      await a.next('ready')
      for (let i = 0; i < 3; i++) {
        const again = await b.request('join', { roomId: 'rl' }, 'joinResponse')
        t.equal(again.data.success, true, `rejoin ${i + 1} accepted`)
        t.same((await a.next('ready')).data, { peerId: b.peerId }, 'ready re-announced')
      }
    })

    t.test('relay: offer, answer and candidates reach the target with the server-stamped sender', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'relay', a, b)

      b.send('offer', { peerId: a.peerId, offer: { ...OFFER, secret: 'x' }, from: 'FORGED', roomId: 'relay', extra: { nested: true } })
      const offer = await a.next('offer')
      t.same(offer.data, { offer: OFFER, peerId: b.peerId, from: b.peerId }, 'forged from overwritten; unknown fields not forwarded')

      a.send('answer', { peerId: b.peerId, answer: ANSWER, from: b.peerId })
      t.same((await b.next('answer')).data, { answer: ANSWER, peerId: a.peerId, from: a.peerId })

      a.send('ice-candidate', { peerId: b.peerId, candidate: { ...CANDIDATE, evil: '__proto__' } })
      t.same((await b.next('ice-candidate')).data, { candidate: CANDIDATE, peerId: a.peerId, from: a.peerId })
      a.send('ice-candidate', { peerId: b.peerId, candidate: null })
      t.same((await b.next('ice-candidate')).data, { candidate: null, peerId: a.peerId, from: a.peerId }, 'end-of-candidates')
      // An echo of a's relays would be sent to a before the reply to its next message.
      await a.request('ping', {}, 'pong')
      t.equal(a.all('answer').length + a.all('ice-candidate').length, 0, 'nothing echoed to the sender')
    })

    t.test('no relay across rooms, to strangers, to oneself, or from outside a room', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      const outsider = await connect(t, ws)
      await joinRoom(app, 'room-a', a)
      await joinRoom(app, 'room-b', b)

      for (const [type, data] of [
        ['offer', { peerId: b.peerId, offer: OFFER }],
        ['answer', { peerId: b.peerId, answer: ANSWER }],
        ['ice-candidate', { peerId: b.peerId, candidate: CANDIDATE }]
      ] as const) {
        const res = await a.request(type, data, 'error')
        t.same(res.data, { code: 'peer_not_found', message: 'Target peer not found in your room', type }, `${type} across rooms refused`)
      }
      t.equal((await a.request('offer', { peerId: a.peerId, offer: OFFER }, 'error')).data.code, 'peer_not_found', 'not to oneself')
      t.equal((await a.request('offer', { peerId: 'nobody-at-all', offer: OFFER }, 'error')).data.code, 'peer_not_found', 'not to an unknown peer')
      t.equal((await outsider.request('offer', { peerId: a.peerId, offer: OFFER }, 'error')).data.code, 'peer_not_found', 'not from a peer in no room')
      // Markers on the refused paths (a → b, outsider → a) once b and the
      // outsider share a's room: what the refused messages delivered would be
      // in before them. Anything a sent itself comes before its pong.
      t.equal((await b.request('leave', { roomId: 'room-b' }, 'leaveResponse')).data.success, true)
      for (const c of [b, outsider]) t.equal((await c.request('join', { roomId: 'room-a' }, 'joinResponse')).data.success, true)
      await flushPath(a, b)
      await flushPath(outsider, a)
      await a.request('ping', {}, 'pong')
      t.same(relaysIn(b), [], 'the other room received nothing')
      t.same(relaysIn(a), [], 'a peer never receives its own message, nor one from outside a room')
    })

    t.test('initiator-online and recipient-ready go to the others in the sender\'s room', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      const c = await connect(t, ws)
      const stranger = await connect(t, ws)
      await joinRoom(app, 'bc', a, b, c)
      await joinRoom(app, 'elsewhere', stranger)

      a.send('initiator-online', { roomId: 'bc' })
      t.same((await b.next('initiator-online')).data, { roomId: 'bc' })
      t.same((await c.next('initiator-online')).data, { roomId: 'bc' })

      b.send('recipient-ready', { roomId: null, peerId: 'FORGED' })
      t.same((await a.next('recipient-ready')).data, { peerId: b.peerId }, 'roomId null accepted, peerId stamped')
      b.send('recipient-ready', {})
      t.same((await a.next('recipient-ready')).data, { peerId: b.peerId }, 'roomId absent accepted')
      b.send('recipient-ready', { roomId: 'bc' })
      t.same((await c.next('recipient-ready')).data, { peerId: b.peerId })

      const wrong = await stranger.request('initiator-online', { roomId: 'bc' }, 'error')
      t.same(wrong.data, { code: 'not_in_room', message: 'Not a member of that room', type: 'initiator-online' })
      t.equal((await b.request('recipient-ready', { roomId: 'elsewhere' }, 'error')).data.code, 'not_in_room')
      const loner = await connect(t, ws)
      t.equal((await loner.request('recipient-ready', { roomId: null }, 'error')).data.code, 'not_in_room', 'in no room at all')
      // Markers on the paths from the senders to the other room (a → stranger,
      // b → stranger) once the stranger is in theirs; an echo to a comes before its pong.
      t.equal((await stranger.request('leave', { roomId: 'elsewhere' }, 'leaveResponse')).data.success, true)
      t.equal((await stranger.request('join', { roomId: 'bc' }, 'joinResponse')).data.success, true)
      await flushPath(a, stranger)
      await flushPath(b, stranger)
      await a.request('ping', {}, 'pong')
      t.equal(stranger.all('initiator-online').length + stranger.all('recipient-ready').length, 0, 'other rooms hear nothing')
      t.equal(a.all('initiator-online').length, 0, 'not echoed to the sender')
    })

    t.test('leave: reply, peer-disconnected to the others, and not_in_room', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'lv', a, b)
      const wrong = await a.request('leave', { roomId: 'other' }, 'leaveResponse')
      t.same(wrong.data, { success: false, roomId: 'other', code: 'not_in_room' })
      const ok = await b.request('leave', { roomId: 'lv' }, 'leaveResponse')
      t.same(ok.data, { success: true, roomId: 'lv' })
      t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId })
      const peers = (await a.request('join', { roomId: 'lv' }, 'joinResponse')).data.peers
      t.same(peers, [], 'b is no longer a member')
      t.equal((await b.request('join', { roomId: 'lv' }, 'joinResponse')).data.success, true, 'b may join again')
    })

    t.test('ping gets pong with the id echoed', async (t) => {
      const { ws } = await setup(t)
      const a = await connect(t, ws)
      const pong = await a.request('ping', {}, 'pong')
      t.same(pong.data, {})
      a.ws.send(JSON.stringify({ type: 'ping', id: 'no-data' }))
      t.same(await a.next('pong'), { type: 'pong', data: {}, id: 'no-data' }, 'data may be absent')
    })

    t.test('every malformed frame gets its error code and the connection stays open', async (t) => {
      const { app, ws } = await setup(t)
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'err', a, b)
      const cases: Array<[string | Buffer, string, string | undefined]> = [
        ['not json', 'bad_json', undefined],
        ['[1,2]', 'bad_json', undefined],
        ['42', 'bad_json', undefined],
        ['null', 'bad_json', undefined],
        ['"join"', 'bad_json', undefined],
        [Buffer.from([1, 2, 3]), 'bad_json', undefined],
        ['{}', 'invalid_message', undefined],
        ['{"type":42}', 'invalid_message', undefined],
        ['{"type":"ping","id":42}', 'invalid_message', undefined],
        [JSON.stringify({ type: 'ping', id: 'x'.repeat(65) }), 'invalid_message', undefined],
        ['{"type":"fly"}', 'unknown_type', 'fly'],
        ['{"type":"__proto__"}', 'unknown_type', '__proto__'],
        ['{"type":"constructor"}', 'unknown_type', 'constructor'],
        ['{"type":"toString"}', 'unknown_type', 'toString'],
        ['{"type":"join"}', 'invalid_message', 'join'],
        ['{"type":"join","data":{"roomId":42}}', 'invalid_message', 'join'],
        ['{"type":"join","data":{"roomId":"a:b"}}', 'invalid_message', 'join'],
        [JSON.stringify({ type: 'join', data: { roomId: 'x'.repeat(65) } }), 'invalid_message', 'join'],
        ['{"type":"offer","data":{"peerId":"x"}}', 'invalid_message', 'offer'],
        ['{"type":"offer","data":{"peerId":"x","offer":{"type":"bogus","sdp":""}}}', 'invalid_message', 'offer'],
        ['{"type":"ice-candidate","data":{"peerId":"x","candidate":"text"}}', 'invalid_message', 'ice-candidate'],
        ['{"type":"leave","data":[]}', 'invalid_message', 'leave']
      ]
      for (const [frame, code, type] of cases) {
        a.ws.send(frame)
        const err = await a.next('error')
        t.equal(err.data.code, code, `${String(frame).slice(0, 50)} → ${code}`)
        t.equal(err.data.type, type, 'type echoed when known')
        t.type(err.data.message, 'string')
        t.notMatch(err.data.message, /at .+:\d+/, 'no stack')
      }
      const bad = await a.request('join', { roomId: 42 }, 'error')
      t.equal(bad.data.code, 'invalid_message', 'the id is echoed on errors')
      t.equal(a.ws.readyState, a.ws.OPEN, 'still open')
      b.send('offer', { peerId: a.peerId, offer: OFFER })
      t.same((await a.next('offer')).data.from, b.peerId, 'and still served')
      // What a's frames leaked to b would be in before a's marker.
      await flushPath(a, b)
      t.equal(b.all('error').length, 0, 'nothing leaked to the other member')
    })

    t.test('1000 candidates arrive in the order sent', async (t) => {
      const { app, ws } = await setup(t, { WS_RATE_BURST: '5000', WS_RATE_PER_S: '5000' })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      await joinRoom(app, 'order', a, b)
      for (let i = 0; i < 1000; i++) a.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: `candidate:${i}`, sdpMLineIndex: 0 } })
      a.send('ping', {}, 'done')
      await a.next('pong')
      const deadline = Date.now() + 5000
      while (b.all('ice-candidate').length < 1000 && Date.now() < deadline) await quietly(20)
      const got = b.all('ice-candidate').map(f => Number(f.data.candidate.candidate.split(':')[1]))
      t.equal(got.length, 1000)
      t.same(got, Array.from({ length: 1000 }, (_, i) => i), 'in order')
    })

    t.test('a clean close tells the room at once', async (t) => {
      const { app, ws } = await setup(t, { RESUME_GRACE_MS: '60000' })
      const a = await connect(t, ws)
      const b = await connect(t, ws)
      const c = await connect(t, ws)
      await joinRoom(app, 'cc', a, b, c)
      await b.close(1001)
      t.same((await a.next('peer-disconnected', 1000)).data, { peerId: b.peerId })
      t.same((await c.next('peer-disconnected', 1000)).data, { peerId: b.peerId })
      c.ws.close()
      t.same((await a.next('peer-disconnected', 1000)).data, { peerId: c.peerId }, 'a close without a status (1005) is clean too')
      t.same((await a.request('join', { roomId: 'cc' }, 'joinResponse')).data.peers, [])
    })
  })
}
