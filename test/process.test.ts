import t from 'tap'
import { startServer } from './helpers/process'
import { connect, TestClient } from './helpers/ws'

t.test('SIGTERM: sockets closed with 1001, new upgrades refused, exit 0 within the bound', async (t) => {
  const server = await startServer(t, { SHUTDOWN_TIMEOUT_MS: '5000' })
  const { roomId } = await (await fetch(`${server.http}/api/get_room`)).json() as { roomId: string }
  const a = await connect(t, server.ws)
  const b = await connect(t, server.ws)
  t.equal((await a.request('join', { roomId }, 'joinResponse')).data.success, true)
  t.equal((await b.request('join', { roomId }, 'joinResponse')).data.success, true)

  const started = Date.now()
  server.child.kill('SIGTERM')
  t.same(await a.closed, { code: 1001, reason: 'server shutting down' })
  t.equal((await b.closed).code, 1001)
  const exit = await server.exited
  t.equal(exit.code, 0, 'exit code 0')
  t.ok(Date.now() - started < 5000, 'inside SHUTDOWN_TIMEOUT_MS')
  await server.closed // its last lines may still be in the pipes at exit
  t.match(server.output(), /shutting down/)
  t.notMatch(server.output(), /v=0|candidate:/, 'no SDP or candidates in the logs')
})

t.test('the log never carries resume tokens or signaling payloads', async (t) => {
  const server = await startServer(t, { LOG_LEVEL: 'trace' })
  const a = await connect(t, server.ws)
  const b = await connect(t, `${server.ws}?resume=${encodeURIComponent(a.token)}`)
  const { roomId } = await (await fetch(`${server.http}/api/get_room`)).json() as { roomId: string }
  await b.request('join', { roomId }, 'joinResponse')
  const c = await connect(t, server.ws)
  await c.request('join', { roomId }, 'joinResponse')
  c.send('offer', { peerId: b.peerId, offer: { type: 'offer', sdp: 'v=0 secret-sdp-marker' } })
  c.send('ice-candidate', { peerId: b.peerId, candidate: { candidate: 'candidate:secret-ice-marker' } })
  await b.next('ice-candidate')
  server.child.kill('SIGTERM')
  await server.closed // exited, and all it wrote has been read
  const log = server.output()
  t.notMatch(log, a.token.split('.')[1] ?? 'x', 'resume secret not logged')
  t.notMatch(log, /secret-sdp-marker|secret-ice-marker/, 'payloads not logged')
  t.match(log, /joined room/, 'but the session is logged')
})

t.test('a refused upgrade during shutdown is an HTTP status, not a hang', async (t) => {
  const server = await startServer(t, { SHUTDOWN_TIMEOUT_MS: '3000' })
  const holder = new TestClient(server.ws)
  await holder.opened
  server.child.kill('SIGTERM')
  await holder.closed
  const late = new TestClient(server.ws)
  await t.rejects(late.opened, 'no new connection is accepted')
  t.equal((await server.exited).code, 0)
})
