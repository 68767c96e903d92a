/*
 * The floor: the least a relay speaking this protocol must do. In-memory
 * maps, JSON.parse and forward with the sender stamped, no validation, no
 * limits, no metrics, no Redis. Same envelope and the same REST call the
 * workloads use (POST /api/create_room), so both run the same load.
 */
import { createServer } from 'node:http'
import { randomBytes } from 'node:crypto'
import { WebSocketServer, type WebSocket } from 'ws'

interface Peer { id: string, ws: WebSocket, room: string | null }

const port = Number(process.env['PORT'] ?? 3101)
const peers = new Map<string, Peer>()
const rooms = new Map<string, Set<Peer>>()
const created = new Set<string>()

const http = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/create_room') {
    let body = ''
    req.on('data', (d: Buffer) => { body += d.toString() })
    req.on('end', () => {
      const { roomId } = JSON.parse(body) as { roomId: string }
      const fresh = !created.has(roomId)
      created.add(roomId)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ success: fresh, message: fresh ? 'create room success' : 'roomId is already exists' }))
    })
    return
  }
  res.statusCode = 404
  res.end()
})

const wss = new WebSocketServer({ server: http, path: '/ws' })
wss.on('connection', (ws) => {
  const peer: Peer = { id: randomBytes(16).toString('base64url'), ws, room: null }
  peers.set(peer.id, peer)
  ws.send(JSON.stringify({ type: 'welcome', data: { peerId: peer.id, protocol: 1, heartbeatMs: 25000, resumeToken: '', iceServers: [] } }))
  ws.on('message', (raw) => {
    const msg = JSON.parse(raw.toString()) as { type: string, data: Record<string, unknown>, id?: string }
    const data = msg.data
    switch (msg.type) {
      case 'join': {
        const roomId = data['roomId'] as string
        let room = rooms.get(roomId)
        if (room === undefined) rooms.set(roomId, room = new Set())
        room.add(peer)
        peer.room = roomId
        ws.send(JSON.stringify({ type: 'joinResponse', data: { success: true, message: 'Successfully joined room', roomId, peerId: peer.id, peers: [...room].filter(p => p !== peer).map(p => p.id) }, id: msg.id }))
        const ready = JSON.stringify({ type: 'ready', data: { peerId: peer.id } })
        for (const other of room) if (other !== peer) other.ws.send(ready)
        return
      }
      case 'offer':
      case 'answer':
      case 'ice-candidate': {
        const target = peers.get(data['peerId'] as string)
        if (target === undefined) return
        data['peerId'] = peer.id
        data['from'] = peer.id
        target.ws.send(JSON.stringify(msg))
        return
      }
      case 'ping':
        ws.send(JSON.stringify({ type: 'pong', data: {}, id: msg.id }))
    }
  })
  ws.on('close', () => {
    peers.delete(peer.id)
    if (peer.room === null) return
    const room = rooms.get(peer.room)
    room?.delete(peer)
    const gone = JSON.stringify({ type: 'peer-disconnected', data: { peerId: peer.id } })
    for (const other of room ?? []) other.ws.send(gone)
  })
})

http.listen(port, '127.0.0.1')
process.on('SIGTERM', () => process.exit(0))
