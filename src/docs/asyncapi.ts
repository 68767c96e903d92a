import { Type, type TSchema } from '@sinclair/typebox'
import {
  ClientMessageSchemas, CorrelationIdSchema, ErrorCodeSchema, PROTOCOL_VERSION, ServerMessageSchemas,
  type ClientMessageType, type ServerMessageType
} from '../../schemas/ws'
import { version } from '../../package.json'

/*
 * The /ws protocol as AsyncAPI 3.0 and as plain JSON Schema, generated from
 * the TypeBox schemas that validate the frames (schemas/ws.ts). Written to
 * schemas/ by `npm run schemas`; a test fails when the files are stale.
 */

const CLIENT_DOCS: Record<ClientMessageType, { summary: string, reply?: ServerMessageType[] }> = {
  join: { summary: 'Join a room (checks: already in another room, rate limit, room exists, capacity). Same-room rejoin is allowed, not rate limited, and re-announces ready.', reply: ['joinResponse', 'error'] },
  leave: { summary: 'Leave the room; the others get peer-disconnected.', reply: ['leaveResponse', 'error'] },
  offer: { summary: 'SDP offer for peerId; delivered only within the sender\'s room, stamped with the sender\'s id.', reply: ['error'] },
  answer: { summary: 'SDP answer for peerId; same rules as offer.', reply: ['error'] },
  'ice-candidate': { summary: 'ICE candidate (or null: end of candidates) for peerId; same rules as offer.', reply: ['error'] },
  'initiator-online': { summary: 'Tell the others in the room that the initiator is online.', reply: ['error'] },
  'recipient-ready': { summary: 'Tell the others in the sender\'s room that this recipient is ready (roomId may be null or absent).', reply: ['error'] },
  ping: { summary: 'Application-level ping (browsers cannot send WebSocket pings).', reply: ['pong', 'error'] }
}

const SERVER_DOCS: Record<ServerMessageType, string> = {
  welcome: 'First frame on every connection: identity, resume token, heartbeat and ICE servers.',
  joinResponse: 'Reply to join. message strings are kept for the web client: "Successfully joined room", "Room does not exist", "Rate limit exceeded. Try again in <n>s. Attempts left: <n>.", "Socket is already bound to another room".',
  leaveResponse: 'Reply to leave.',
  ready: 'A peer joined (or rejoined) your room.',
  offer: 'An SDP offer from peerId (= from, the authenticated sender).',
  answer: 'An SDP answer from peerId (= from).',
  'ice-candidate': 'An ICE candidate from peerId (= from); null ends the candidates.',
  'initiator-online': 'The initiator of your room is online.',
  'recipient-ready': 'A recipient in your room is ready.',
  'peer-disconnected': 'A peer left your room (leave, clean close, or not resumed within the grace).',
  pong: 'Reply to ping.',
  error: 'A request failed; the connection stays open. type echoes the offending message type when known.'
}

const ERROR_CODE_DOCS = {
  bad_json: 'frame is not JSON, not an object, or a binary frame',
  invalid_message: 'envelope or data fails its schema (unknown extra fields are ignored and never forwarded)',
  unknown_type: 'type is not a known message',
  not_in_room: 'initiator-online, recipient-ready or leave from a peer not in that room',
  peer_not_found: 'relay target unknown, gone, or in another room',
  room_not_found: 'join: no such room (inside joinResponse)',
  room_full: 'join: room at capacity (inside joinResponse)',
  already_in_room: 'join: already in another room (inside joinResponse)',
  rate_limited: 'join rate limit (inside joinResponse) or per-connection message rate exceeded (message dropped)',
  unavailable: 'the store is unreachable; the request was not applied'
}

/** The envelope of one message as JSON Schema: { type: <literal>, data, id? }. */
export function envelopeOf (type: string, data: TSchema, title: string, description: string, dataOptional = false): TSchema {
  return Type.Object({
    type: Type.Literal(type),
    data: dataOptional ? Type.Optional(data) : data,
    id: Type.Optional(CorrelationIdSchema)
  }, { title, description })
}

const pascal = (s: string) => s.replace(/(^|-)(\w)/g, (_m, _d, c: string) => c.toUpperCase())
export const clientName = (type: string) => `Client${pascal(type)}`
export const serverName = (type: string) => `Server${pascal(type)}`

/** Plain JSON (no TypeBox symbols) of every message envelope, by name. */
export function messageSchemas (): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [type, schema] of Object.entries(ClientMessageSchemas)) {
    out[clientName(type)] = envelopeOf(type, schema, clientName(type), CLIENT_DOCS[type as ClientMessageType].summary, type === 'ping')
  }
  for (const [type, schema] of Object.entries(ServerMessageSchemas)) {
    out[serverName(type)] = envelopeOf(type, schema, serverName(type), SERVER_DOCS[type as ServerMessageType])
  }
  return JSON.parse(JSON.stringify(out)) as Record<string, unknown>
}

/** One JSON Schema file (draft-07) for generators that take plain JSON Schema. */
export function buildJsonSchemaBundle (): Record<string, unknown> {
  const definitions = messageSchemas()
  const union = (names: string[]) => names.map(name => ({ $ref: `#/definitions/${name}` }))
  // Two unions, one per direction: a client `offer` and a server `offer` share
  // a type, so one union of both directions would match those frames twice.
  const clientNames = Object.keys(ClientMessageSchemas).map(clientName)
  const serverNames = Object.keys(ServerMessageSchemas).map(serverName)
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://privydrop.app/schemas/signaling-messages.json',
    title: 'SignalingMessage',
    description: `Every frame of the PrivyDrop /ws protocol (version ${PROTOCOL_VERSION}): a ClientMessage goes from browser to server, a ServerMessage from server to browser. Validate a frame against the union of its direction.`,
    definitions: {
      ...definitions,
      ErrorCode: JSON.parse(JSON.stringify(ErrorCodeSchema)),
      ClientMessage: { title: 'ClientMessage', description: 'A frame a browser sends (one per `type`).', oneOf: union(clientNames) },
      ServerMessage: { title: 'ServerMessage', description: 'A frame the server sends (one per `type`).', oneOf: union(serverNames) }
    },
    anyOf: [{ $ref: '#/definitions/ClientMessage' }, { $ref: '#/definitions/ServerMessage' }]
  }
}

export function buildAsyncApi (): Record<string, unknown> {
  const schemas = messageSchemas()
  const messages: Record<string, unknown> = {}
  const channelMessages: Record<string, unknown> = {}
  const operations: Record<string, unknown> = {}
  const ref = (name: string) => ({ $ref: `#/channels/signaling/messages/${name}` })

  for (const [name, payload] of Object.entries(schemas)) {
    messages[name] = {
      name,
      title: name,
      summary: (payload as { description: string }).description,
      contentType: 'application/json',
      payload
    }
    channelMessages[name] = { $ref: `#/components/messages/${name}` }
  }
  // Operations are the server's: it receives what clients send and sends the rest.
  for (const type of Object.keys(ClientMessageSchemas) as ClientMessageType[]) {
    const doc = CLIENT_DOCS[type]
    operations[`receive${pascal(type)}`] = {
      action: 'receive',
      channel: { $ref: '#/channels/signaling' },
      summary: doc.summary,
      messages: [ref(clientName(type))],
      ...(doc.reply !== undefined && {
        reply: { channel: { $ref: '#/channels/signaling' }, messages: doc.reply.map(r => ref(serverName(r))) }
      })
    }
  }
  for (const type of Object.keys(ServerMessageSchemas) as ServerMessageType[]) {
    operations[`send${pascal(type)}`] = {
      action: 'send',
      channel: { $ref: '#/channels/signaling' },
      summary: SERVER_DOCS[type],
      messages: [ref(serverName(type))]
    }
  }

  return {
    asyncapi: '3.0.0',
    info: {
      title: 'PrivyDrop signaling server: WebSocket protocol',
      version,
      description: [
        'One WebSocket endpoint, GET /ws, for browsers using the native WebSocket. Every frame is a UTF-8 text frame holding one JSON envelope { type, data, id? }.',
        'The optional id (a string of at most 64 characters) is copied into the direct reply (joinResponse, leaveResponse, pong, error).',
        'Reconnect with /ws?resume=<resumeToken> within the grace to keep the peerId, the room and the messages sent meanwhile.',
        'Close codes: 1001 server shutting down (reconnect and resume), 1008 sustained flooding, 1009 frame over MAX_MESSAGE_BYTES, 4000 replaced by a resumed connection.',
        'Error codes: ' + Object.entries(ERROR_CODE_DOCS).map(([code, text]) => `${code}: ${text}`).join('; ') + '.'
      ].join('\n\n')
    },
    defaultContentType: 'application/json',
    servers: {
      local: { host: 'localhost:3001', protocol: 'ws', pathname: '/ws', description: 'A server started with npm start' }
    },
    channels: {
      signaling: {
        address: '/ws',
        title: 'Signaling',
        description: 'The one WebSocket of a browser tab role (a tab typically holds two: sending and receiving).',
        messages: channelMessages,
        bindings: {
          ws: {
            bindingVersion: '0.1.0',
            query: { type: 'object', properties: { resume: { type: 'string', description: 'resumeToken from the last welcome' } } }
          }
        }
      }
    },
    operations,
    components: {
      messages,
      schemas: { ErrorCode: { ...JSON.parse(JSON.stringify(ErrorCodeSchema)), description: 'Error codes of error frames and joinResponse.code' } }
    }
  }
}
