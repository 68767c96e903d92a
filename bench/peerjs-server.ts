/*
 * The PeerJS server as a bench target: the `peer` package's own PeerServer
 * (Express + ws) with its defaults, except for the listen address (loopback)
 * and `concurrent_limit` (5000 by default, below the idle workload's 10,000
 * connections). Its CLI would do the same but logs a line per connect and
 * disconnect; this leaves that out.
 */
import { PeerServer } from 'peer'
import { PEERJS_KEY } from './peerjs'

const server = PeerServer({
  host: '127.0.0.1',
  port: Number(process.env['PORT'] ?? 9000),
  path: '/',
  key: PEERJS_KEY,
  concurrent_limit: 1_000_000
})
// Socket errors are emitted on the app; unheard, an 'error' event would throw.
server.on('error', () => {})
process.on('SIGTERM', () => process.exit(0))
