import { Type, type Static } from '@sinclair/typebox'

/*
 * Every schema that a client generator should name carries a `title`: the
 * published documents (src/docs/factor.ts) turn each titled schema into one
 * entry of components.schemas / definitions and refer to it with $ref, so
 * generated code gets `RoomId`, `ErrorResponse`… instead of inlined copies.
 * Titles never change validation.
 */

export const ROOM_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$'

export const RoomIdSchema = Type.String({
  title: 'RoomId',
  pattern: ROOM_ID_PATTERN,
  minLength: 1,
  maxLength: 64,
  description: '1 to 64 characters of [A-Za-z0-9_-]',
  examples: ['4821', 'team-sync_2026']
})
export type RoomId = Static<typeof RoomIdSchema>

/** Server-assigned: 22 base64url characters (128 random bits). */
export const PeerIdSchema = Type.String({
  title: 'PeerId',
  pattern: '^[A-Za-z0-9_-]{1,64}$',
  minLength: 1,
  maxLength: 64,
  description: 'Server-assigned peer id (opaque, URL-safe)',
  examples: ['q7Xk2m9RbT0cVw1yZa3LdA']
})
export type PeerId = Static<typeof PeerIdSchema>

/** Fastify's error shape: every 4xx/5xx body from the REST API. */
export const ErrorResponseSchema = Type.Object({
  statusCode: Type.Integer({ minimum: 400, maximum: 599 }),
  code: Type.Optional(Type.String({ description: 'Machine-readable code, e.g. FST_ERR_VALIDATION or PRIVYDROP_STORE_UNAVAILABLE' })),
  error: Type.String({ description: 'The HTTP reason phrase' }),
  message: Type.String({ description: 'What went wrong, for people' })
}, { title: 'ErrorResponse', description: "Fastify's standard error body" })
export type ErrorResponse = Static<typeof ErrorResponseSchema>

/** What each error status means on this API: the description of the declared response. */
export const ERROR_STATUS_DOCS = {
  400: 'The body or query does not match its schema, or is not valid JSON',
  403: 'The token does not match the session',
  404: 'Not found (this route is off by configuration)',
  413: 'The body is larger than BODY_LIMIT_BYTES',
  415: 'The body has a content type this route does not take',
  429: 'Rate limit exceeded (API_RATE_LIMIT_MAX per API_RATE_LIMIT_WINDOW_S per client IP); retry after `retry-after` seconds',
  500: 'Unexpected server error (logged; no detail is given)',
  503: 'The store is unreachable or the server is shutting down; nothing was applied, try again'
} as const
export type ErrorStatus = keyof typeof ERROR_STATUS_DOCS

/** Every error a route with a JSON body can answer before its handler runs. */
export const BODY_ERRORS = [400, 413, 415] as const

/**
 * A response schema with the response's own description in the OpenAPI
 * document (`x-response-description` is @fastify/swagger's key for it; it is
 * taken out of the schema there and ignored by the serializer).
 */
export function described<T extends object> (schema: T, description: string): T {
  return { ...schema, 'x-response-description': description }
}

/**
 * The response schemas of the error statuses a route can answer with, each
 * the ErrorResponse body with what the status means here.
 */
export function errorResponses<const C extends readonly ErrorStatus[]> (...codes: C): { [K in C[number]]: typeof ErrorResponseSchema } {
  return Object.fromEntries(codes.map(code => [code, described(ErrorResponseSchema, ERROR_STATUS_DOCS[code])])) as unknown as { [K in C[number]]: typeof ErrorResponseSchema }
}

/**
 * The headers @fastify/rate-limit puts on every response under /api (and
 * retry-after on a 429), declared on each response so that generated clients
 * can read them. test/openapi.test.ts holds this list to real responses.
 */
export const RATE_LIMIT_HEADERS = {
  'x-ratelimit-limit': Type.Integer({ description: 'Requests allowed per window (API_RATE_LIMIT_MAX)' }),
  'x-ratelimit-remaining': Type.Integer({ description: 'Requests left in the current window' }),
  'x-ratelimit-reset': Type.Integer({ description: 'Seconds until the window resets' })
}
export const RETRY_AFTER_HEADER = {
  'retry-after': Type.Integer({ description: 'Seconds to wait before retrying' })
}

/** Declares the rate limiter's headers on every response of a route under /api. */
export function rateLimited<R extends Record<number, object>> (responses: R): R {
  return Object.fromEntries(Object.entries(responses).map(([status, schema]) => [status, {
    ...schema,
    headers: status === '429' ? { ...RATE_LIMIT_HEADERS, ...RETRY_AFTER_HEADER } : RATE_LIMIT_HEADERS
  }])) as R
}
