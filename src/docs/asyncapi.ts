import { Type, type TSchema } from '@sinclair/typebox'
import {
  ClientMessageSchemas, CorrelationIdSchema, ErrorCodeSchema, PROTOCOL_VERSION, ServerMessageSchemas,
  type ClientMessageType, type ServerMessageType
} from '../../schemas/ws'
import { version } from '../../package.json'
import { plain, SchemaFactory, type Json } from './factor'

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
export function envelopeOf (type: string, data: TSchema | null, title: string, description: string, options: { closed?: boolean } = {}): TSchema {
  return Type.Object({
    type: Type.Literal(type),
    ...(data !== null && { data }),
    id: Type.Optional(CorrelationIdSchema)
  }, { title, description, ...(options.closed === true && { additionalProperties: false }) })
}

const pascal = (s: string) => s.replace(/(^|-)(\w)/g, (_m, _d, c: string) => c.toUpperCase())
export const clientName = (type: string) => `Client${pascal(type)}`
export const serverName = (type: string) => `Server${pascal(type)}`

/** Every message envelope (TypeBox, titled), by name: Client* from browsers, Server* from the server. */
export function messageEnvelopes (): { client: Record<string, TSchema>, server: Record<string, TSchema> } {
  const client: Record<string, TSchema> = {}
  const server: Record<string, TSchema> = {}
  for (const [type, schema] of Object.entries(ClientMessageSchemas)) {
    // A ping carries nothing: `data` may be absent or {} (§3.2), so the
    // published ping has none, rather than an empty open object that
    // generators turn into a map.
    client[clientName(type)] = envelopeOf(type, type === 'ping' ? null : schema, clientName(type), CLIENT_DOCS[type as ClientMessageType].summary)
  }
  for (const [type, schema] of Object.entries(ServerMessageSchemas)) {
    server[serverName(type)] = envelopeOf(type, schema, serverName(type), SERVER_DOCS[type as ServerMessageType], { closed: true })
  }
  return { client, server }
}

const UNION_DOCS = {
  ClientMessage: 'A frame a browser sends: one message per `type`.',
  ServerMessage: 'A frame the server sends: one message per `type`.'
}

/**
 * Every named schema of the protocol, factored: the envelopes, their `data`
 * payloads, the shared types they use, and the two unions (one per
 * direction, discriminated on `type`: a client `offer` and a server `offer`
 * share a type, so one union of both directions would match such frames twice).
 */
export function protocolSchemas (refBase: string, style: 'asyncapi' | 'openapi' | 'json-schema'): { schemas: Record<string, Json>, client: string[], server: string[] } {
  const factory = new SchemaFactory(refBase)
  const { client, server } = messageEnvelopes()
  for (const schema of [...Object.values(client), ...Object.values(server)]) factory.factor(plain(schema))
  factory.factor(plain(ErrorCodeSchema))
  const union = (title: keyof typeof UNION_DOCS, types: string[], nameOf: (type: string) => string): void => {
    // AsyncAPI's discriminator is the property name; OpenAPI's an object with
    // the mapping; draft-07 has none (`type`'s const tells the members apart).
    const discriminator = style === 'asyncapi'
      ? 'type'
      : style === 'openapi'
        ? { propertyName: 'type', mapping: Object.fromEntries(types.map(type => [type, refBase + nameOf(type)])) }
        : undefined
    factory.add(title, {
      title,
      description: UNION_DOCS[title],
      oneOf: types.map(type => ({ $ref: refBase + nameOf(type) })),
      ...(discriminator !== undefined && { discriminator })
    })
  }
  union('ClientMessage', Object.keys(ClientMessageSchemas), clientName)
  union('ServerMessage', Object.keys(ServerMessageSchemas), serverName)
  return { schemas: factory.sorted(), client: Object.keys(client), server: Object.keys(server) }
}

/** One JSON Schema file (draft-07) for generators that take plain JSON Schema. */
export function buildJsonSchemaBundle (): Record<string, unknown> {
  const { schemas: definitions } = protocolSchemas('#/definitions/', 'json-schema')
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://privydrop.app/schemas/signaling-messages.json',
    title: 'SignalingMessage',
    description: `Every frame of the PrivyDrop /ws protocol (version ${PROTOCOL_VERSION}): a ClientMessage goes from browser to server, a ServerMessage from server to browser. Validate a frame against the union of its direction.`,
    definitions,
    anyOf: [{ $ref: '#/definitions/ClientMessage' }, { $ref: '#/definitions/ServerMessage' }]
  }
}

/** Names a direct reply list: "Replies: joinResponse or error." */
function replies (types: ServerMessageType[] | undefined): string {
  return types === undefined ? '' : ` Direct reply: ${types.join(' or ')} (with this message's id).`
}

/**
 * AsyncAPI 3.0 (not 3.1: @asyncapi/modelina 5 takes 3.0 at most). The one
 * socket is described as two channels on the same address, one per
 * direction, each with one operation of the server carrying every message of
 * that direction: generators that turn an operation's messages into a union
 * (Modelina does) then name the two unions after the channels, ClientMessage
 * and ServerMessage, like the unions in components.schemas.
 */
export function buildAsyncApi (): Record<string, unknown> {
  const { schemas, client, server } = protocolSchemas('#/components/schemas/', 'asyncapi')
  const messages: Record<string, unknown> = {}
  const channelMessages = (names: string[]): Record<string, unknown> =>
    Object.fromEntries(names.map(name => [name, { $ref: `#/components/messages/${name}` }]))
  const operationMessages = (channel: string, names: string[]): unknown[] =>
    names.map(name => ({ $ref: `#/channels/${channel}/messages/${name}` }))

  const clientTypes = Object.keys(ClientMessageSchemas) as ClientMessageType[]
  const serverTypes = Object.keys(ServerMessageSchemas) as ServerMessageType[]
  for (const type of clientTypes) {
    const name = clientName(type)
    messages[name] = { name, title: name, summary: CLIENT_DOCS[type].summary + replies(CLIENT_DOCS[type].reply), contentType: 'application/json', payload: { $ref: `#/components/schemas/${name}` } }
  }
  for (const type of serverTypes) {
    const name = serverName(type)
    messages[name] = { name, title: name, summary: SERVER_DOCS[type], contentType: 'application/json', payload: { $ref: `#/components/schemas/${name}` } }
  }
  const wsBinding = {
    ws: {
      bindingVersion: '0.1.0',
      query: { type: 'object', properties: { resume: { type: 'string', description: 'resumeToken from the last welcome' } } }
    }
  }
  const channels = {
    clientMessage: {
      address: '/ws',
      title: 'ClientMessage',
      description: 'The frames a browser sends on its WebSocket (a tab typically holds two: sending and receiving).',
      messages: channelMessages(client),
      bindings: wsBinding
    },
    serverMessage: {
      address: '/ws',
      title: 'ServerMessage',
      description: 'The frames the server sends on the same WebSocket.',
      messages: channelMessages(server),
      bindings: wsBinding
    }
  }
  // Operations are the server's: it receives what clients send and sends the rest.
  const operations = {
    receiveClientMessage: {
      action: 'receive',
      channel: { $ref: '#/channels/clientMessage' },
      title: 'Receive a client message',
      summary: 'Every frame a browser may send; each message says which direct reply it gets.',
      messages: operationMessages('clientMessage', client)
    },
    sendServerMessage: {
      action: 'send',
      channel: { $ref: '#/channels/serverMessage' },
      title: 'Send a server message',
      summary: 'Every frame the server sends: welcome first, then replies and what other peers relay.',
      messages: operationMessages('serverMessage', server)
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
        'Reconnect with `/ws?resume=<resumeToken>` within the grace to keep the peerId, the room and the messages sent meanwhile.',
        'Close codes: 1001 server shutting down (reconnect and resume), 1008 sustained flooding, 1009 frame over MAX_MESSAGE_BYTES, 1012 the instance is cut off from the fleet (resume on another instance at once), 1013 the session to resume could not be looked up (resume again shortly), 4000 replaced by a resumed connection.',
        'Error codes: ' + Object.entries(ERROR_CODE_DOCS).map(([code, text]) => `${code}: ${text}`).join('; ') + '.'
      ].join('\n\n')
    },
    defaultContentType: 'application/json',
    servers: {
      local: { host: 'localhost:3001', protocol: 'ws', pathname: '/ws', description: 'A server started with npm start' }
    },
    channels,
    operations,
    components: {
      schemas,
      messages
    }
  }
}
