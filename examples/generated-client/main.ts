// A browser client written only against what @hey-api/openapi-ts generates
// from privydrop-signaling's schemas/openapi.json into ./generated/ (see
// README.md): REST through the generated SDK, and the /ws frames typed by the
// generated ClientMessage and ServerMessage unions. No WebRTC: it shows the
// signaling itself (welcome, join, peers, ping/pong) and logs every frame.
import { client } from './generated/client.gen'
import { getRoom } from './generated/sdk.gen'
import type { ClientMessage, ServerMessage } from './generated/types.gen'

function element<T extends HTMLElement> (selector: string): T {
  const found = document.querySelector<T>(selector)
  if (found === null) throw new Error(`${selector} is missing from the page`)
  return found
}

const ui = {
  me: element<HTMLElement>('#me'),
  status: element<HTMLElement>('#status'),
  newRoom: element<HTMLButtonElement>('#new-room'),
  roomInput: element<HTMLInputElement>('#room'),
  join: element<HTMLButtonElement>('#join'),
  room: element<HTMLElement>('#room-id'),
  peers: element<HTMLUListElement>('#peers'),
  hello: element<HTMLButtonElement>('#hello'),
  pong: element<HTMLElement>('#pong'),
  log: element<HTMLOListElement>('#log')
}

// The SDK's paths start with a slash; the page's origin is the server.
client.setConfig({ baseUrl: location.origin })

const peers = new Set<string>()
const pings = new Map<string, number>()
let pingCount = 0
let joinCount = 0

function log (direction: '→' | '←' | '·', text: string): void {
  const item = document.createElement('li')
  item.textContent = `${direction} ${text}`
  ui.log.prepend(item)
}

function renderPeers (): void {
  ui.peers.replaceChildren(...[...peers].map(peerId => {
    const item = document.createElement('li')
    item.textContent = peerId
    return item
  }))
}

const socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`)

function send (message: ClientMessage): void {
  socket.send(JSON.stringify(message))
  log('→', JSON.stringify(message))
}

function receive (message: ServerMessage): void {
  switch (message.type) {
    case 'welcome':
      ui.me.textContent = message.data.peerId
      ui.status.textContent = 'connected'
      ui.join.disabled = false
      ui.hello.disabled = false
      break
    case 'joinResponse':
      if (!message.data.success) {
        ui.status.textContent = `join refused: ${message.data.message} (${message.data.code ?? 'no code'})`
        break
      }
      ui.room.textContent = message.data.roomId
      ui.status.textContent = 'in the room'
      peers.clear()
      for (const peerId of message.data.peers ?? []) peers.add(peerId)
      renderPeers()
      break
    case 'ready':
      peers.add(message.data.peerId)
      renderPeers()
      break
    case 'peer-disconnected':
      peers.delete(message.data.peerId)
      renderPeers()
      break
    case 'pong': {
      const sentAt = message.id === undefined ? undefined : pings.get(message.id)
      if (message.id !== undefined && sentAt !== undefined) {
        pings.delete(message.id)
        ui.pong.textContent = `pong ${message.id} after ${Math.round(performance.now() - sentAt)} ms`
      }
      break
    }
    case 'error':
      ui.status.textContent = `error ${message.data.code}: ${message.data.message}`
      break
    default:
      // offer, answer, ice-candidate, …: a WebRTC client would act on these.
      break
  }
}

socket.addEventListener('message', (event: MessageEvent<string>) => {
  log('←', event.data)
  // The server's frames follow its published schema (its tests validate every frame of a session).
  receive(JSON.parse(event.data) as ServerMessage)
})
socket.addEventListener('close', (event) => {
  ui.status.textContent = `disconnected (${event.code})`
  ui.join.disabled = true
  ui.hello.disabled = true
  log('·', `closed ${event.code}`)
})

ui.newRoom.addEventListener('click', async () => {
  const { data, error, response } = await getRoom()
  if (data === undefined) {
    ui.status.textContent = `new room failed: ${response.status} ${error?.message ?? ''}`
    return
  }
  ui.roomInput.value = data.roomId
  log('·', `GET /api/get_room → ${data.roomId}`)
})

ui.join.addEventListener('click', () => {
  const roomId = ui.roomInput.value.trim()
  if (roomId !== '') send({ type: 'join', data: { roomId }, id: `join-${++joinCount}` })
})

ui.hello.addEventListener('click', () => {
  const id = `hello-${++pingCount}`
  pings.set(id, performance.now())
  ui.pong.textContent = `ping ${id} sent`
  send({ type: 'ping', id })
})
