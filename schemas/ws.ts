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
export const CorrelationIdSchema = Type.String({ title: 'CorrelationId', minLength: 1, maxLength: 64, pattern: CORRELATION_ID_PATTERN, description: 'Client correlation id (1–64 printable characters), echoed in the direct reply' })

export const EnvelopeSchema = Type.Object({
  type: Type.String({ minLength: 1, maxLength: 64 }),
  data: Type.Optional(Type.Unknown()),
  id: Type.Optional(CorrelationIdSchema)
})
export type Envelope = Static<typeof EnvelopeSchema>

// --- WebRTC payloads (shape and size checks only; never interpreted) ---

// An offer message carries an offer and an answer message an answer (or a
// provisional one): RTCSessionDescriptionInit narrowed per message, so a
// generated client cannot put one in place of the other.
const Sdp = Type.Optional(Type.String({ maxLength: 65536, description: 'The SDP text (never read by the server)' }))
export const OfferDescriptionSchema = Type.Object({
  type: Type.Literal('offer'),
  sdp: Sdp
}, { title: 'OfferDescription', description: "RTCSessionDescriptionInit of type 'offer'" })
export const AnswerDescriptionSchema = Type.Object({
  type: Type.Union([Type.Literal('answer'), Type.Literal('pranswer')]),
  sdp: Sdp
}, { title: 'AnswerDescription', description: "RTCSessionDescriptionInit of type 'answer' or 'pranswer'" })
export type OfferDescription = Static<typeof OfferDescriptionSchema>
export type AnswerDescription = Static<typeof AnswerDescriptionSchema>

const NullableString = (maxLength: number) => Type.Union([Type.String({ maxLength }), Type.Null()])
export const IceCandidateSchema = Type.Object({
  candidate: Type.Optional(Type.String({ maxLength: 4096 })),
  sdpMid: Type.Optional(NullableString(256)),
  sdpMLineIndex: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 65535 }), Type.Null()])),
  usernameFragment: Type.Optional(NullableString(256))
}, { title: 'IceCandidate', description: 'RTCIceCandidateInit' })
export type IceCandidate = Static<typeof IceCandidateSchema>

// --- Client → server ---

// The web client also sends `from` (and `roomId` with offers, `peerId` with
// recipient-ready); the server ignores them (it stamps the sender itself,
// §3.3), so the published client schemas leave them out: unknown fields are
// accepted and dropped, never forwarded.
const MaybeCandidate = Type.Union([IceCandidateSchema, Type.Null()], { description: 'null ends the candidates' })

export const ClientMessageSchemas = {
  join: Type.Object({ roomId: RoomIdSchema }, { title: 'ClientJoinData' }),
  leave: Type.Object({ roomId: RoomIdSchema }, { title: 'ClientLeaveData' }),
  offer: Type.Object({ peerId: PeerIdSchema, offer: OfferDescriptionSchema }, { title: 'ClientOfferData', description: 'peerId: the target' }),
  answer: Type.Object({ peerId: PeerIdSchema, answer: AnswerDescriptionSchema }, { title: 'ClientAnswerData', description: 'peerId: the target' }),
  'ice-candidate': Type.Object({ peerId: PeerIdSchema, candidate: MaybeCandidate }, { title: 'ClientIceCandidateData', description: 'peerId: the target' }),
  'initiator-online': Type.Object({ roomId: RoomIdSchema }, { title: 'ClientInitiatorOnlineData' }),
  'recipient-ready': Type.Object({
    roomId: Type.Optional(Type.Union([RoomIdSchema, Type.Null()], { description: "null or absent before the client knows its room; when present, the sender's room" }))
  }, { title: 'ClientRecipientReadyData' }),
  ping: Type.Object({}, { title: 'ClientPingData' })
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
  Type.Literal('unavailable'),
  Type.Literal('outcome_unknown')
], { title: 'ErrorCode', description: 'Error codes of error frames and joinResponse.code' })
export type ErrorCode = Static<typeof ErrorCodeSchema>

export const JoinFailureCodeSchema = Type.Union([
  Type.Literal('room_not_found'), Type.Literal('room_full'), Type.Literal('already_in_room'),
  Type.Literal('rate_limited'), Type.Literal('unavailable')
], { title: 'JoinFailureCode' })

// The server builds every frame it sends from these fields alone, so its
// payloads are closed (additionalProperties: false): a strict validator of
// server frames catches any field the schema does not declare, and generators
// emit plain interfaces without an index signature. Client payloads stay open:
// the server ignores unknown fields (§3.4).
const closed = { additionalProperties: false } as const

export const ServerMessageSchemas = {
  welcome: Type.Object({
    peerId: PeerIdSchema,
    // A one-value enum rather than TypeBox's Literal (`const`): generators
    // turn a numeric const into plain `number` (Modelina, quicktype), an enum into `1`.
    protocol: Type.Unsafe<typeof PROTOCOL_VERSION>({ title: 'ProtocolVersion', type: 'integer', enum: [PROTOCOL_VERSION] }),
    heartbeatMs: Type.Integer(),
    resumeToken: Type.String({ description: 'Secret; reconnect with /ws?resume=<token> to keep this identity' }),
    iceServers: Type.Array(IceServerSchema)
  }, { ...closed, title: 'ServerWelcomeData' }),
  joinResponse: Type.Object({
    success: Type.Boolean(),
    message: Type.String(),
    roomId: Type.String(),
    code: Type.Optional(JoinFailureCodeSchema),
    peerId: Type.Optional(PeerIdSchema),
    peers: Type.Optional(Type.Array(PeerIdSchema, { description: "On success: the other members' peer ids" }))
  }, { ...closed, title: 'ServerJoinResponseData' }),
  leaveResponse: Type.Object({
    success: Type.Boolean(),
    roomId: Type.String(),
    code: Type.Optional(Type.Literal('not_in_room'))
  }, { ...closed, title: 'ServerLeaveResponseData' }),
  ready: Type.Object({ peerId: PeerIdSchema }, { ...closed, title: 'ServerReadyData', description: 'peerId: who joined' }),
  offer: Type.Object({ offer: OfferDescriptionSchema, peerId: PeerIdSchema, from: PeerIdSchema }, { ...closed, title: 'ServerOfferData', description: 'peerId and from: the authenticated sender' }),
  answer: Type.Object({ answer: AnswerDescriptionSchema, peerId: PeerIdSchema, from: PeerIdSchema }, { ...closed, title: 'ServerAnswerData', description: 'peerId and from: the authenticated sender' }),
  'ice-candidate': Type.Object({ candidate: MaybeCandidate, peerId: PeerIdSchema, from: PeerIdSchema }, { ...closed, title: 'ServerIceCandidateData', description: 'peerId and from: the authenticated sender' }),
  'initiator-online': Type.Object({ roomId: RoomIdSchema }, { ...closed, title: 'ServerInitiatorOnlineData' }),
  'recipient-ready': Type.Object({ peerId: PeerIdSchema }, { ...closed, title: 'ServerRecipientReadyData', description: 'peerId: the recipient that is ready' }),
  'peer-disconnected': Type.Object({ peerId: PeerIdSchema }, { ...closed, title: 'ServerPeerDisconnectedData', description: 'peerId: who left' }),
  pong: Type.Object({}, { ...closed, title: 'ServerPongData' }),
  error: Type.Object({
    code: ErrorCodeSchema,
    message: Type.String(),
    type: Type.Optional(Type.String({ description: 'The type of the message that failed, when known' }))
  }, { ...closed, title: 'ServerErrorData' })
} satisfies Record<string, TSchema>

export type ServerMessageType = keyof typeof ServerMessageSchemas
export type ServerData<T extends ServerMessageType> = Static<(typeof ServerMessageSchemas)[T]>

/** WebSocket close codes the server uses. */
export const CloseCodes = {
  normal: 1000,
  goingAway: 1001,
  policyViolation: 1008,
  messageTooBig: 1009,
  /** The instance lost its link to the fleet (Redis) or its session: resume on another instance at once. */
  serviceRestart: 1012,
  /** The session a resume names could not be looked up (the registry did not answer): resume again shortly. */
  tryAgainLater: 1013,
  replaced: 4000
} as const
