// PrivyDrop demo: a file moves between two tabs over an RTCDataChannel; the
// handshake goes through /ws with the typed client (served from ./lib/).
// Query options: ?room=<id> joins at once; ?drop=after-offer drops this tab's
// signaling connection once, right after the first offer (used by the resume test).
import { SignalingClient, createRestClient } from './lib/index.mjs'

const params = new URLSearchParams(location.search)
const $ = (id) => document.getElementById(id)
const CHUNK = 16 * 1024
const rest = createRestClient(location.origin)
const client = new SignalingClient({ url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws` })

/** Observable state (the end-to-end tests read it). */
const demo = window.demo = {
  peerId: null,
  roomId: null,
  joined: false,
  status: 'idle',
  progress: 0,
  sentHash: null,
  receivedHash: null,
  receivedBytes: 0,
  resumes: 0,
  dropped: false,
  log: []
}

function log (line) {
  demo.log.push(line)
  const li = document.createElement('li')
  li.textContent = line
  $('log').append(li)
}
function fail (err) {
  log(`error: ${err.message}`)
  status(`error: ${err.message}`)
}
function status (text, peer = '') {
  demo.status = text
  $('status').textContent = text
  $('peer').textContent = peer
}
async function sha256 (buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer)
  return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('')
}

// --- WebRTC -------------------------------------------------------------------

const peers = new Map() // peerId → { pc, pendingCandidates, remoteSet }
let file = null

function connection (peerId) {
  let entry = peers.get(peerId)
  if (entry) return entry
  const pc = new RTCPeerConnection({ iceServers: client.iceServers })
  entry = { pc, pendingCandidates: [], remoteSet: false }
  peers.set(peerId, entry)
  pc.onicecandidate = (e) => {
    client.iceCandidate(peerId, e.candidate ? e.candidate.toJSON() : null)
  }
  pc.onconnectionstatechange = () => log(`peer ${peerId.slice(0, 6)}: ${pc.connectionState}`)
  pc.ondatachannel = (e) => receive(e.channel, peerId)
  return entry
}

async function sendTo (peerId) {
  if (!file || peers.has(peerId)) return
  const { pc } = connection(peerId)
  const channel = pc.createDataChannel('file', { ordered: true })
  channel.binaryType = 'arraybuffer'
  channel.bufferedAmountLowThreshold = 256 * 1024
  channel.onopen = () => pump(channel, peerId).catch(fail)
  await pc.setLocalDescription(await pc.createOffer())
  client.offer(peerId, { type: pc.localDescription.type, sdp: pc.localDescription.sdp })
  status('negotiating', `with ${peerId.slice(0, 6)}`)
}

async function pump (channel, peerId) {
  const buffer = await file.arrayBuffer()
  demo.sentHash = await sha256(buffer)
  channel.send(JSON.stringify({ name: file.name, size: buffer.byteLength, type: file.type }))
  status('sending', `to ${peerId.slice(0, 6)}`)
  for (let offset = 0; offset < buffer.byteLength; offset += CHUNK) {
    if (channel.bufferedAmount > 1024 * 1024) {
      await new Promise(resolve => { channel.onbufferedamountlow = resolve })
    }
    channel.send(buffer.slice(offset, offset + CHUNK))
    setProgress(Math.min(1, (offset + CHUNK) / buffer.byteLength))
  }
  status('sent', `${buffer.byteLength} bytes`)
  $('result').textContent = `sha-256 ${demo.sentHash}`
}

function receive (channel, peerId) {
  channel.binaryType = 'arraybuffer'
  let meta = null
  const chunks = []
  channel.onmessage = async (e) => {
    if (meta === null) {
      meta = JSON.parse(e.data)
      status('receiving', `${meta.name} from ${peerId.slice(0, 6)}`)
      return
    }
    chunks.push(e.data)
    demo.receivedBytes += e.data.byteLength
    setProgress(demo.receivedBytes / meta.size)
    if (demo.receivedBytes === meta.size) {
      const blob = new Blob(chunks, { type: meta.type || 'application/octet-stream' })
      demo.receivedHash = await sha256(await blob.arrayBuffer())
      status('received', `${meta.size} bytes`)
      const a = document.createElement('a')
      a.href = URL.createObjectURL(blob)
      a.download = meta.name
      a.textContent = `Save ${meta.name}`
      $('result').replaceChildren(a, document.createElement('br'), `sha-256 ${demo.receivedHash}`)
    }
  }
}

function setProgress (p) {
  demo.progress = p
  $('progress').value = p
}

// --- signaling ------------------------------------------------------------------

client.on('open', ({ peerId, resumed }) => {
  demo.peerId = peerId
  if (resumed) demo.resumes++
  log(`${resumed ? 'resumed' : 'connected'} as ${peerId.slice(0, 6)}`)
})
client.on('close', ({ code, willReconnect }) => log(`signaling closed (${code})${willReconnect ? ', reconnecting' : ''}`))
client.on('ready', ({ peerId }) => {
  log(`peer ${peerId.slice(0, 6)} joined`)
  sendTo(peerId).catch(fail)
})
client.on('peer-disconnected', ({ peerId }) => {
  log(`peer ${peerId.slice(0, 6)} left`)
  peers.get(peerId)?.pc.close()
  peers.delete(peerId)
})
client.on('offer', async ({ from, offer }) => {
  log(`offer from ${from.slice(0, 6)}`)
  const entry = connection(from)
  await entry.pc.setRemoteDescription(offer)
  entry.remoteSet = true
  for (const c of entry.pendingCandidates.splice(0)) await entry.pc.addIceCandidate(c)
  if (params.get('drop') === 'after-offer' && !demo.dropped) {
    // Simulated network drop mid-negotiation: the answer below is queued and
    // sent after the resume; what the sender sends meanwhile is held by the server.
    demo.dropped = true
    log('dropping the signaling connection (test)')
    client.reconnectNow()
  }
  await entry.pc.setLocalDescription(await entry.pc.createAnswer())
  client.answer(from, { type: entry.pc.localDescription.type, sdp: entry.pc.localDescription.sdp })
  status('negotiating', `with ${from.slice(0, 6)}`)
})
client.on('answer', async ({ from, answer }) => {
  log(`answer from ${from.slice(0, 6)}`)
  const entry = peers.get(from)
  if (!entry) return
  await entry.pc.setRemoteDescription(answer)
  entry.remoteSet = true
  for (const c of entry.pendingCandidates.splice(0)) await entry.pc.addIceCandidate(c)
})
client.on('ice-candidate', async ({ from, candidate }) => {
  const entry = connection(from)
  if (!entry.remoteSet) entry.pendingCandidates.push(candidate ?? undefined)
  else await entry.pc.addIceCandidate(candidate ?? undefined)
})

async function join (roomId) {
  $('room').value = roomId
  try {
    const res = await client.join(roomId)
    demo.roomId = roomId
    demo.joined = true
    const url = new URL(location.href)
    url.search = `?room=${encodeURIComponent(roomId)}`
    $('share').textContent = `Open ${url} in another tab.`
    status('in room', `${res.peers.length} other peer(s)`)
    log(`joined ${roomId} with ${res.peers.length} other peer(s)`)
    for (const peerId of res.peers) sendTo(peerId).catch(fail)
  } catch (err) {
    status(`join failed: ${err.message}`)
  }
}

$('new-room').onclick = async () => join((await rest.getRoom()).roomId)
$('join').onclick = () => join($('room').value.trim())
$('file').onchange = () => {
  file = $('file').files[0] ?? null
  if (!file) return
  log(`picked ${file.name} (${file.size} bytes)`)
  // Peers already in the room get an offer now; later ones on `ready`.
  fetchPeers().catch(fail)
}
async function fetchPeers () {
  if (!demo.roomId) return
  client.initiatorOnline(demo.roomId)
  const res = await client.join(demo.roomId) // a same-room rejoin lists the peers again
  for (const peerId of res.peers) sendTo(peerId).catch(fail)
}

await client.connect()
if (params.get('room')) await join(params.get('room'))
