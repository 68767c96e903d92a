import { createHash, createHmac, randomBytes } from 'node:crypto'
import { createSocket } from 'node:dgram'

/*
 * Just enough STUN/TURN (RFC 5389/5766) to ask a TURN server for an
 * allocation with long-term credentials, as a browser's ICE agent does with
 * the username/credential from /api/ice_servers.
 */

const MAGIC = 0x2112a442
const ALLOCATE = 0x0003
const ALLOCATE_SUCCESS = 0x0103
const ATTR = { USERNAME: 0x0006, MESSAGE_INTEGRITY: 0x0008, ERROR_CODE: 0x0009, REALM: 0x0014, NONCE: 0x0015, REQUESTED_TRANSPORT: 0x0019 }

function attribute (type: number, value: Buffer): Buffer {
  const padded = Buffer.alloc(4 + Math.ceil(value.length / 4) * 4)
  padded.writeUInt16BE(type, 0)
  padded.writeUInt16BE(value.length, 2)
  value.copy(padded, 4)
  return padded
}

function message (type: number, txId: Buffer, attrs: Buffer[], integrityKey?: Buffer): Buffer {
  let body = Buffer.concat(attrs)
  const header = Buffer.alloc(20)
  header.writeUInt16BE(type, 0)
  header.writeUInt32BE(MAGIC, 4)
  txId.copy(header, 8)
  if (integrityKey !== undefined) {
    // The length covers the MESSAGE-INTEGRITY attribute the HMAC is computed before.
    header.writeUInt16BE(body.length + 24, 2)
    const hmac = createHmac('sha1', integrityKey).update(Buffer.concat([header, body])).digest()
    body = Buffer.concat([body, attribute(ATTR.MESSAGE_INTEGRITY, hmac)])
  }
  header.writeUInt16BE(body.length, 2)
  return Buffer.concat([header, body])
}

function parse (buf: Buffer): { type: number, attrs: Map<number, Buffer> } {
  const type = buf.readUInt16BE(0)
  const length = buf.readUInt16BE(2)
  const attrs = new Map<number, Buffer>()
  let offset = 20
  while (offset + 4 <= 20 + length) {
    const attrType = buf.readUInt16BE(offset)
    const attrLen = buf.readUInt16BE(offset + 2)
    attrs.set(attrType, buf.subarray(offset + 4, offset + 4 + attrLen))
    offset += 4 + Math.ceil(attrLen / 4) * 4
  }
  return { type, attrs }
}

type Socket = ReturnType<typeof createSocket>

function exchange (socket: Socket, port: number, request: Buffer): Promise<{ type: number, attrs: Map<number, Buffer> }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('TURN server did not answer')), 3000)
    socket.once('message', (msg) => { clearTimeout(timer); resolve(parse(msg)) })
    socket.send(request, port, '127.0.0.1')
  })
}

/**
 * Allocate with the given credentials; resolves 'allocated' or the error code
 * the server gave. One socket throughout: the server ties its nonce to the
 * client's transport address.
 */
export async function turnAllocate (port: number, username: string, password: string): Promise<'allocated' | number> {
  const socket = createSocket('udp4')
  socket.on('error', () => {})
  try {
    return await allocate(socket, port, username, password)
  } finally {
    socket.close()
  }
}

async function allocate (socket: Socket, port: number, username: string, password: string): Promise<'allocated' | number> {
  const transport = attribute(ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
  const challenge = await exchange(socket, port, message(ALLOCATE, randomBytes(12), [transport]))
  const realm = challenge.attrs.get(ATTR.REALM)
  const nonce = challenge.attrs.get(ATTR.NONCE)
  if (realm === undefined || nonce === undefined) throw new Error('no realm/nonce challenge from the TURN server')
  const key = createHash('md5').update(`${username}:${realm.toString()}:${password}`).digest()
  const reply = await exchange(socket, port, message(ALLOCATE, randomBytes(12), [
    transport,
    attribute(ATTR.USERNAME, Buffer.from(username)),
    attribute(ATTR.REALM, realm),
    attribute(ATTR.NONCE, nonce)
  ], key))
  if (reply.type === ALLOCATE_SUCCESS) return 'allocated'
  const error = reply.attrs.get(ATTR.ERROR_CODE)
  return error === undefined ? -1 : (error.readUInt8(2) & 0x7) * 100 + error.readUInt8(3)
}
