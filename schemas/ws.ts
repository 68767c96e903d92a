import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { PeerIdSchema, RoomIdSchema } from './common'
import { IceServerSchema } from './rest'

/*
 * The /ws protocol (docs/protocol.md §3). Every frame is one JSON envelope
 * { type, data, id? }. Inbound `data` objects ignore unknown fields, and the
 * server never forwards them: outbound messages are rebuilt from known fields.
 */

export const PROTOCOL_VERSION = 1

/** 1–64 characters, none of them a control character: an id is echoed and must never alter framing. */
export const CORRELATION_ID_PATTERN = '^[^\\u0000-\\u001F\\u007F]{1,64}$'
export const CorrelationIdSchema = Type.String({ minLength: 1, maxLength: 64, pattern: CORRELATION_ID_PATTERN, description: 'Client correlation id (1–64 printable characters), echoed in the direct reply' })

export const EnvelopeSchema = Type.Object({
  type: Type.String({ minLength: 1, maxLength: 64 }),
  data: Type.Optional(Type.Unknown()),
  id: Type.Optional(CorrelationIdSchema)
})
export type Envelope = Static<typeof EnvelopeSchema>

// --- WebRTC payloads (shape and size checks only; never interpreted) ---

export const SessionDescriptionSchema = Type.Object({
  type: Type.Union([Type.Literal('offer'), Type.Literal('answer'), Type.Literal('pranswer'), Type.Literal('rollback')]),
  sdp: Type.Optional(Type.String({ maxLength: 65536 }))
}, { description: 'RTCSessionDescriptionInit' })
export type SessionDescription = Static<typeof SessionDescriptionSchema>

const NullableString = (maxLength: number) => Type.Union([Type.String({ maxLength }), Type.Null()])
export const IceCandidateSchema = Type.Object({
  candidate: Type.Optional(Type.String({ maxLength: 4096 })),
  sdpMid: Type.Optional(NullableString(256)),
  sdpMLineIndex: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 65535 }), Type.Null()])),
  usernameFragment: Type.Optional(NullableString(256))
}, { description: 'RTCIceCandidateInit' })
export type IceCandidate = Static<typeof IceCandidateSchema>

// --- Client → server ---

const ClaimedFrom = Type.Optional(Type.Unknown({ description: 'Ignored: the server stamps the sender' }))

export const ClientMessageSchemas = {
  join: Type.Object({ roomId: RoomIdSchema }),
  leave: Type.Object({ roomId: RoomIdSchema }),
  offer: Type.Object({ peerId: PeerIdSchema, offer: SessionDescriptionSchema, from: ClaimedFrom, roomId: Type.Optional(Type.Unknown()) }),
  answer: Type.Object({ peerId: PeerIdSchema, answer: SessionDescriptionSchema, from: ClaimedFrom }),
  'ice-candidate': Type.Object({ peerId: PeerIdSchema, candidate: Type.Union([IceCandidateSchema, Type.Null()]), from: ClaimedFrom }),
  'initiator-online': Type.Object({ roomId: RoomIdSchema }),
  'recipient-ready': Type.Object({
    roomId: Type.Optional(Type.Union([RoomIdSchema, Type.Null()])),
    peerId: Type.Optional(Type.Unknown({ description: 'Ignored: the server stamps the sender' }))
  }),
  ping: Type.Object({})
} satisfies Record<string, TSchema>

export type ClientMessageType = keyof typeof ClientMessageSchemas
export type ClientData<T extends ClientMessageType> = Static<(typeof ClientMessageSchemas)[T]>

// --- Server → client ---

export const ErrorCodeSchema = Type.Union([
  Type.Literal('bad_json'),
  Type.Literal('invalid_message'),
  Type.Literal('unknown_type'),
  Type.Literal('not_in_room'),
  Type.Literal('peer_not_found'),
  Type.Literal('room_not_found'),
  Type.Literal('room_full'),
  Type.Literal('already_in_room'),
  Type.Literal('rate_limited'),
  Type.Literal('unavailable')
])
export type ErrorCode = Static<typeof ErrorCodeSchema>

export const JoinFailureCodeSchema = Type.Union([
  Type.Literal('room_not_found'), Type.Literal('room_full'), Type.Literal('already_in_room'),
  Type.Literal('rate_limited'), Type.Literal('unavailable')
])

export const ServerMessageSchemas = {
  welcome: Type.Object({
    peerId: PeerIdSchema,
    protocol: Type.Literal(PROTOCOL_VERSION),
    heartbeatMs: Type.Integer(),
    resumeToken: Type.String({ description: 'Secret; reconnect with /ws?resume=<token> to keep this identity' }),
    iceServers: Type.Array(IceServerSchema)
  }),
  joinResponse: Type.Object({
    success: Type.Boolean(),
    message: Type.String(),
    roomId: Type.String(),
    code: Type.Optional(JoinFailureCodeSchema),
    peerId: Type.Optional(PeerIdSchema),
    peers: Type.Optional(Type.Array(PeerIdSchema))
  }),
  leaveResponse: Type.Object({
    success: Type.Boolean(),
    roomId: Type.String(),
    code: Type.Optional(Type.Literal('not_in_room'))
  }),
  ready: Type.Object({ peerId: PeerIdSchema }),
  offer: Type.Object({ offer: SessionDescriptionSchema, peerId: PeerIdSchema, from: PeerIdSchema }),
  answer: Type.Object({ answer: SessionDescriptionSchema, peerId: PeerIdSchema, from: PeerIdSchema }),
  'ice-candidate': Type.Object({ candidate: Type.Union([IceCandidateSchema, Type.Null()]), peerId: PeerIdSchema, from: PeerIdSchema }),
  'initiator-online': Type.Object({ roomId: RoomIdSchema }),
  'recipient-ready': Type.Object({ peerId: PeerIdSchema }),
  'peer-disconnected': Type.Object({ peerId: PeerIdSchema }),
  pong: Type.Object({}),
  error: Type.Object({
    code: ErrorCodeSchema,
    message: Type.String(),
    type: Type.Optional(Type.String())
  })
} satisfies Record<string, TSchema>

export type ServerMessageType = keyof typeof ServerMessageSchemas
export type ServerData<T extends ServerMessageType> = Static<(typeof ServerMessageSchemas)[T]>

/** WebSocket close codes the server uses. */
export const CloseCodes = {
  normal: 1000,
  goingAway: 1001,
  policyViolation: 1008,
  messageTooBig: 1009,
  replaced: 4000
} as const
