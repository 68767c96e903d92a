import { Type, type Static } from '@sinclair/typebox'
import { RoomIdSchema, PeerIdSchema } from './common'

// Bodies accept unknown fields (the web client may send extras; they are
// ignored) but are never coerced: see the ajv options in src/server-options.ts.

export const RoomBodySchema = Type.Object({ roomId: RoomIdSchema }, { title: 'RoomBody' })
export type RoomBody = Static<typeof RoomBodySchema>

export const SuccessMessageSchema = Type.Object({
  success: Type.Boolean(),
  message: Type.String()
}, { title: 'SuccessMessage' })
export type SuccessMessage = Static<typeof SuccessMessageSchema>

export const GetRoomResponseSchema = Type.Object({ roomId: RoomIdSchema }, { title: 'GetRoomResponse' })
export type GetRoomResponse = Static<typeof GetRoomResponseSchema>

export const CheckRoomResponseSchema = Type.Object({
  available: Type.Boolean({ description: 'true when no live room has this id' })
}, { title: 'CheckRoomResponse' })
export type CheckRoomResponse = Static<typeof CheckRoomResponseSchema>

export const LeaveRoomBodySchema = Type.Object({
  roomId: RoomIdSchema,
  peerId: PeerIdSchema,
  token: Type.String({ minLength: 1, maxLength: 128, description: "The session's current resumeToken (from welcome)" })
}, { title: 'LeaveRoomBody' })
export type LeaveRoomBody = Static<typeof LeaveRoomBodySchema>

/** The old web app's body, accepted only with LEGACY_LEAVE_ROOM: no token, the peer id alone. */
export const LegacyLeaveRoomBodySchema = Type.Object({
  roomId: RoomIdSchema,
  socketId: Type.String({
    pattern: PeerIdSchema.pattern,
    minLength: 1,
    maxLength: 64,
    description: 'The peer id (where the old server had the Socket.IO socket id); accepted without a token'
  })
}, { title: 'LegacyLeaveRoomBody' })
export type LegacyLeaveRoomBody = Static<typeof LegacyLeaveRoomBodySchema>

/** POST /api/leave_room's body with LEGACY_LEAVE_ROOM on. */
export const LeaveRoomOrLegacyBodySchema = Type.Union([LeaveRoomBodySchema, LegacyLeaveRoomBodySchema], { title: 'LeaveRoomOrLegacyBody' })
export type LeaveRoomOrLegacyBody = Static<typeof LeaveRoomOrLegacyBodySchema>

export const TrackBodySchema = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 64, description: 'Referrer tag to count' }),
  timestamp: Type.Union([
    Type.Number(),
    Type.String({ maxLength: 64 })
  ], { description: "Client time (number or ISO string); accepted but not trusted: the server's UTC day is used" }),
  path: Type.Optional(Type.String({ maxLength: 2048 }))
}, { title: 'TrackBody' })
export type TrackBody = Static<typeof TrackBodySchema>

export const SuccessSchema = Type.Object({ success: Type.Boolean() }, { title: 'Success' })
export type Success = Static<typeof SuccessSchema>

export const LogsDebugBodySchema = Type.Object({
  message: Type.String({ description: 'Client log line (longer messages are truncated to LOGS_DEBUG_MAX_BYTES)' }),
  timestamp: Type.Union([Type.Number(), Type.String({ maxLength: 64 })])
}, { title: 'LogsDebugBody' })
export type LogsDebugBody = Static<typeof LogsDebugBodySchema>

export const IceServerSchema = Type.Object({
  urls: Type.Union([Type.String(), Type.Array(Type.String())]),
  username: Type.Optional(Type.String()),
  credential: Type.Optional(Type.String())
}, { title: 'IceServer', description: 'RTCIceServer' })
export type IceServer = Static<typeof IceServerSchema>

export const IceServersResponseSchema = Type.Object({
  iceServers: Type.Array(IceServerSchema)
}, { title: 'IceServersResponse' })
export type IceServersResponse = Static<typeof IceServersResponseSchema>

export const HealthResponseSchema = Type.Object({
  status: Type.Literal('healthy'),
  timestamp: Type.String({ format: 'date-time' }),
  uptime: Type.Integer({ description: 'seconds since start' }),
  service: Type.Literal('privydrop-backend'),
  version: Type.String(),
  environment: Type.String()
}, { title: 'HealthResponse' })
export type HealthResponse = Static<typeof HealthResponseSchema>

export const CheckStatusSchema = Type.Union([Type.Literal('ok'), Type.Literal('fail')], { title: 'CheckStatus' })

const ReadyChecksSchema = Type.Object({
  store: CheckStatusSchema,
  shutdown: CheckStatusSchema
}, { title: 'ReadyChecks', description: 'store: Redis (or the in-memory store) answers and, with Redis, the instance hears the others; shutdown: fail while draining' })

/** /ready's 200 and 503 bodies are told apart by `status`. */
export const ReadyResponseSchema = Type.Object({
  status: Type.Literal('ready'),
  checks: ReadyChecksSchema
}, { title: 'ReadyResponse' })
export type ReadyResponse = Static<typeof ReadyResponseSchema>

export const NotReadyResponseSchema = Type.Object({
  status: Type.Literal('unavailable'),
  checks: ReadyChecksSchema
}, { title: 'NotReadyResponse' })
export type NotReadyResponse = Static<typeof NotReadyResponseSchema>
