import { Type, type Static } from '@sinclair/typebox'

export const ROOM_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$'

export const RoomIdSchema = Type.String({
  pattern: ROOM_ID_PATTERN,
  minLength: 1,
  maxLength: 64,
  description: '1 to 64 characters of [A-Za-z0-9_-]',
  examples: ['4821', 'team-sync_2026']
})
export type RoomId = Static<typeof RoomIdSchema>

/** Server-assigned: 22 base64url characters (128 random bits). */
export const PeerIdSchema = Type.String({
  pattern: '^[A-Za-z0-9_-]{1,64}$',
  minLength: 1,
  maxLength: 64,
  description: 'Server-assigned peer id (opaque, URL-safe)',
  examples: ['q7Xk2m9RbT0cVw1yZa3LdA']
})
export type PeerId = Static<typeof PeerIdSchema>

/** Fastify's error shape: every 4xx/5xx body from the REST API. */
export const ErrorResponseSchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String()),
  error: Type.String(),
  message: Type.String()
}, { description: "Fastify's standard error body" })
export type ErrorResponse = Static<typeof ErrorResponseSchema>

/** Response schemas for the error statuses a route can answer with. */
export function errorResponses<const C extends readonly number[]> (...codes: C): { [K in C[number]]: typeof ErrorResponseSchema } {
  return Object.fromEntries(codes.map(code => [code, ErrorResponseSchema])) as { [K in C[number]]: typeof ErrorResponseSchema }
}
