import t from 'tap'
import Fastify from 'fastify'
import websocket from '@fastify/websocket'
import WebSocket from 'ws'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { releaseUpgradeResponse, replaceErrorListener } from '../src/routes/ws-socket'

/*
 * What src/routes/ws-socket.ts works around in @fastify/websocket, pinned on
 * the installed version: if an upgrade of the plugin stops leaving its error
 * listener or its ServerResponse on the socket, these assertions fail and
 * the workaround can be dropped (or must be changed) knowingly.
 */

t.test('@fastify/websocket leaves its own error listener and the upgrade\'s ServerResponse on the socket; the workarounds remove both', async (t) => {
  const app = Fastify()
  await app.register(websocket)
  const seen: Record<string, unknown> = {}
  const responses = new WeakMap<object, ServerResponse>()
  app.get('/ws', { websocket: true, onRequest: (request, reply, done) => { responses.set(request.raw, reply.raw); done() } }, (socket, request) => {
    const raw = request.raw.socket as Socket & { _httpMessage?: ServerResponse | null }
    seen['errorListenersBefore'] = socket.listenerCount('error')
    seen['responseBefore'] = raw._httpMessage?.constructor.name
    const mine = (): void => {}
    replaceErrorListener(socket, mine)
    seen['sameResponse'] = responses.get(request.raw) === raw._httpMessage
    releaseUpgradeResponse(responses.get(request.raw) as ServerResponse)
    seen['errorListenersAfter'] = socket.listeners('error')
    seen['mineOnly'] = socket.listeners('error')[0] === mine
    seen['responseAfter'] = raw._httpMessage ?? null
    socket.send('ready')
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
  await new Promise<void>((resolve, reject) => { ws.once('message', () => resolve()); ws.once('error', reject) })
  ws.close()
  t.equal(seen['errorListenersBefore'], 1, 'the plugin attached one error listener (fastify/fastify-websocket#371/#373)')
  t.equal(seen['responseBefore'], 'ServerResponse', 'the plugin left the upgrade\'s ServerResponse on the raw socket')
  t.equal(seen['mineOnly'], true, 'replaced: only ours is left')
  t.equal((seen['errorListenersAfter'] as unknown[]).length, 1)
  t.equal(seen['sameResponse'], true, 'it is Fastify\'s reply.raw: released through public API, no private field')
  t.equal(seen['responseAfter'], null, 'released: the socket no longer holds the response')
})
