// The PrivyDrop web app's signaling, as its classes drive socket.io-client,
// over privydrop-signaling/socket.io (served from ./lib/). Query:
// ?role=initiator|recipient&room=<id>; ?drop=after-offer drops the recipient's
// socket once right after the first offer (the resume test).
import { io } from './lib/socket-io.mjs'

const params = new URLSearchParams(location.search)
const role = params.get('role') === 'initiator' ? 'initiator' : 'recipient'
const roomId = params.get('room')
const CHUNK = 16 * 1024
const $ = (id) => document.getElementById(id)

/** Observable state (the end-to-end test reads it). */
const app = window.app = {
  role,
  roomId: null,
  joined: false,
  joinedBy: [], // 'joinResponse' | 'ready' | 'offer', per join
  ids: [], // socket.id at every connect
  disconnects: [], // reasons
  errors: [], // 'error' events: fatal in the web app, must stay empty
  signalingErrors: [],
  peersLeft: [],
  dropped: false,
  status: 'idle',
  sentHash: null,
  receivedHash: null,
  receivedBytes: 0,
  log: []
}
function log (line) {
  app.log.push(line)
  const li = document.createElement('li')
  li.textContent = line
  $('log').append(li)
}
function status (text) {
  app.status = text
  $('status').textContent = text
}
const fail = (err) => { log(`error: ${err.message}`); status(`error: ${err.message}`) }
async function sha256 (buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer)
  return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('')
}

const socket = io(location.origin, { path: '/socket.io/', transports: ['websocket', 'polling'] })

// --- the web app's joinRoom: emit, once('joinResponse'), early success on ready/offer ---
function joinRoom (id) {
  return new Promise((resolve, reject) => {
    let settled = false
    const settle = (by, fn) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.off('joinResponse')
      socket.off('ready', onReady)
      socket.off('offer', onOffer)
      app.joinedBy.push(by)
      fn()
    }
    // A peer talking to us means we are in: the response may come later, or be lost in a reconnect.
    const onReady = () => settle('ready', resolve)
    const onOffer = () => settle('offer', resolve)
    const timer = setTimeout(() => settle('timeout', () => reject(new Error('Join room timeout'))), 15_000)
    socket.emit('join', { roomId: id })
    socket.once('joinResponse', (res) => settle('joinResponse', () => res.success ? resolve() : reject(new Error(res.message))))
    socket.once('ready', onReady)
    socket.once('offer', onOffer)
  })
}

async function enterRoom () {
  await joinRoom(roomId)
  app.roomId = roomId
  app.joined = true
  status('in room')
  log(`joined ${roomId} as ${socket.id.slice(0, 6)}`)
  if (role === 'initiator') socket.emit('initiator-online', { roomId })
  else socket.emit('recipient-ready', { roomId, peerId: socket.id })
}

socket.on('connect', () => {
  app.ids.push(socket.id)
  log(`connect ${socket.id.slice(0, 6)}`)
  // The web app rejoins after every reconnect (a same-room rejoin is allowed and re-announces ready).
  if (app.ids.length === 1 || app.joined) enterRoom().catch(fail)
})
socket.on('disconnect', (reason) => {
  app.disconnects.push(reason)
  log(`disconnect: ${reason}`)
})
socket.on('error', (err) => app.errors.push(String(err?.message ?? err)))
socket.on('signaling_error', (err) => {
  app.signalingErrors.push(err.code)
  log(`signaling error ${err.code} (${err.type})`)
})

// --- WebRTC ---------------------------------------------------------------------

const peers = new Map() // peerId → { pc, pending, remoteSet }
let resolveFile
const fileReady = new Promise(resolve => { resolveFile = resolve })
$('file').onchange = () => { if ($('file').files[0]) resolveFile($('file').files[0]) }

function connection (peerId) {
  let entry = peers.get(peerId)
  if (entry) return entry
  const pc = new RTCPeerConnection({ iceServers: [] })
  entry = { pc, pending: [], remoteSet: false }
  peers.set(peerId, entry)
  pc.onicecandidate = (e) => socket.emit('ice-candidate', { peerId, candidate: e.candidate ? e.candidate.toJSON() : null, from: socket.id })
  pc.onconnectionstatechange = () => log(`peer ${peerId.slice(0, 6)}: ${pc.connectionState}`)
  pc.ondatachannel = (e) => receive(e.channel)
  return entry
}
async function remoteSet (entry) {
  entry.remoteSet = true
  for (const c of entry.pending.splice(0)) await entry.pc.addIceCandidate(c)
}

async function offerTo (peerId) {
  if (peers.has(peerId)) return
  const { pc } = connection(peerId)
  const channel = pc.createDataChannel('file', { ordered: true })
  channel.binaryType = 'arraybuffer'
  channel.bufferedAmountLowThreshold = 256 * 1024
  channel.onopen = () => send(channel).catch(fail)
  await pc.setLocalDescription(await pc.createOffer())
  socket.emit('offer', { peerId, offer: { type: pc.localDescription.type, sdp: pc.localDescription.sdp }, from: socket.id })
  status('negotiating')
}

async function send (channel) {
  const buffer = await (await fileReady).arrayBuffer()
  app.sentHash = await sha256(buffer)
  channel.send(JSON.stringify({ size: buffer.byteLength }))
  status('sending')
  for (let offset = 0; offset < buffer.byteLength; offset += CHUNK) {
    if (channel.bufferedAmount > 1024 * 1024) await new Promise(resolve => { channel.onbufferedamountlow = resolve })
    channel.send(buffer.slice(offset, offset + CHUNK))
    $('progress').value = Math.min(1, (offset + CHUNK) / buffer.byteLength)
  }
  status('sent')
}

function receive (channel) {
  channel.binaryType = 'arraybuffer'
  let size = null
  const chunks = []
  channel.onmessage = async (e) => {
    if (size === null) {
      size = JSON.parse(e.data).size
      status('receiving')
      return
    }
    chunks.push(e.data)
    app.receivedBytes += e.data.byteLength
    $('progress').value = app.receivedBytes / size
    if (app.receivedBytes === size) {
      app.receivedHash = await sha256(await new Blob(chunks).arrayBuffer())
      status('received')
    }
  }
}

// --- the web app's handlers ------------------------------------------------------

if (role === 'initiator') {
  socket.on('ready', ({ peerId }) => offerTo(peerId).catch(fail))
  socket.on('recipient-ready', ({ peerId }) => offerTo(peerId).catch(fail))
  socket.on('answer', async ({ answer, from }) => {
    const entry = peers.get(from)
    if (!entry) return
    await entry.pc.setRemoteDescription(answer)
    await remoteSet(entry)
  })
} else {
  socket.on('initiator-online', ({ roomId: room }) => socket.emit('recipient-ready', { roomId: room, peerId: socket.id }))
  socket.on('offer', async ({ offer, from }) => {
    const entry = connection(from)
    await entry.pc.setRemoteDescription(offer)
    await remoteSet(entry)
    if (params.get('drop') === 'after-offer' && !app.dropped) {
      // A network drop mid-negotiation (socket.io has no public hook; the underlying client has):
      // the answer below is queued and goes out after the resume.
      app.dropped = true
      log('dropping the signaling socket (test)')
      socket.signaling.reconnectNow()
    }
    await entry.pc.setLocalDescription(await entry.pc.createAnswer())
    socket.emit('answer', { peerId: from, answer: { type: entry.pc.localDescription.type, sdp: entry.pc.localDescription.sdp }, from: socket.id })
  })
}
socket.on('ice-candidate', async ({ candidate, from }) => {
  const entry = connection(from)
  if (!entry.remoteSet) entry.pending.push(candidate ?? undefined)
  else await entry.pc.addIceCandidate(candidate ?? undefined)
})
socket.on('peer-disconnected', ({ peerId }) => {
  app.peersLeft.push(peerId)
  log(`peer ${peerId.slice(0, 6)} left`)
  peers.get(peerId)?.pc.close()
  peers.delete(peerId)
})

/**
 * Leaves as the web app does: POST /api/leave_room { roomId, socketId } with
 * no token, answer ignored (the server needs LEGACY_LEAVE_ROOM=true). The test calls it.
 */
app.leave = async () => {
  await fetch('/api/leave_room', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ roomId: app.roomId, socketId: socket.id }) }).catch(() => {})
  app.joined = false
}

/** Joins another room with the web app's joinRoom: resolves 'joined' or the refusal's message. */
app.joinOther = (id) => joinRoom(id).then(() => {
  app.roomId = id
  app.joined = true
  return 'joined'
}, (err) => err.message)
