import type { ServerResponse } from 'node:http'
import type { WebSocket } from 'ws'

/*
 * The two places where this server reaches past @fastify/websocket's API,
 * each behind one function. Both free memory that would otherwise live as
 * long as the connection (KiBs per idle socket, at tens of thousands of
 * sockets); test/ws-internals.test.ts fails as soon as the plugin stops
 * behaving as described here, so the workaround can go (or be fixed) then.
 */

/**
 * @fastify/websocket attaches an 'error' listener to each socket in its
 * upgrade path; it closes over the upgrade request and reply, which keeps
 * them alive with the socket. Upstream: fastify/fastify-websocket#371 (route
 * raw socket errors through errorHandler; moved by #373 into the route
 * handler, where request and reply are in scope). The hub handles socket
 * errors itself, so that listener is replaced by `onError`.
 */
export function replaceErrorListener (socket: WebSocket, onError: (this: WebSocket, err: Error) => void): void {
  socket.removeAllListeners('error')
  socket.on('error', onError)
}

/**
 * @fastify/websocket routes the upgrade through Fastify with a
 * ServerResponse assigned to the raw socket (Fastify's `reply.raw`), and it
 * stays assigned: it holds the upgrade request, Fastify's request and reply,
 * their logger and the reply's finish listener for as long as the connection
 * lives (~2.9 KiB of heap in all). The reply is hijacked and ws owns the
 * socket, so the response lets go of it (ServerResponse's own detachSocket,
 * the counterpart of the assignSocket the plugin called). Its 'finish' never
 * comes either way (nothing is written to it), so no onResponse hook is
 * skipped. No upstream issue yet; ws itself dropped the upgrade request from
 * its sockets for the same reason (websockets/ws#1099, #1104).
 */
export function releaseUpgradeResponse (response: ServerResponse): void {
  const socket = response.socket
  if (socket !== null) response.detachSocket(socket)
}
