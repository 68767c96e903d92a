import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { TSchema } from '@sinclair/typebox'
import {
  CORRELATION_ID_PATTERN, ClientMessageSchemas, EnvelopeSchema,
  type ClientData, type ClientMessageType, type ErrorCode, type ServerData, type ServerMessageType
} from '../../schemas/ws'

// Compiled once at load: validating a frame is a plain function call.
const envelopeCheck = TypeCompiler.Compile(EnvelopeSchema)
const correlationId = new RegExp(CORRELATION_ID_PATTERN)
const dataChecks = new Map<string, TypeCheck<TSchema>>(
  Object.entries(ClientMessageSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)])
)

export type InboundMessage = {
  [T in ClientMessageType]: { ok: true, type: T, data: ClientData<T>, id: string | undefined }
}[ClientMessageType]

export interface InboundError {
  ok: false
  code: ErrorCode
  message: string
  type?: string
  id?: string
}

const ERROR_MESSAGES: Record<ErrorCode, string> = {
  bad_json: 'Frame must be a UTF-8 text frame holding one JSON object',
  invalid_message: 'Message does not match its schema',
  unknown_type: 'Unknown message type',
  not_in_room: 'Not a member of that room',
  peer_not_found: 'Target peer not found in your room',
  room_not_found: 'Room does not exist',
  room_full: 'Room is full',
  already_in_room: 'Socket is already bound to another room',
  rate_limited: 'Rate limit exceeded',
  unavailable: 'Service temporarily unavailable, try again',
  outcome_unknown: 'The store stopped answering while this message was handed to it: it may or may not have been delivered'
}

export function errorText (code: ErrorCode): string {
  return ERROR_MESSAGES[code]
}

function fail (code: ErrorCode, extra: { message?: string, type?: string, id?: string } = {}): InboundError {
  return { ok: false, code, message: extra.message ?? ERROR_MESSAGES[code], type: extra.type, id: extra.id }
}

/**
 * Turns one inbound frame into a typed message or a protocol error, following
 * docs/protocol.md §3.4: bad_json, then invalid_message for the envelope,
 * unknown_type, invalid_message for `data`.
 */
export function parseFrame (raw: string): InboundMessage | InboundError {
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch {
    return fail('bad_json')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('bad_json')

  if (!envelopeCheck.Check(value)) {
    const candidate = value as { id?: unknown }
    // Echo the id only when it is a valid one: nothing malformed goes back out.
    const id = typeof candidate.id === 'string' && correlationId.test(candidate.id) ? candidate.id : undefined
    return fail('invalid_message', { message: describe(envelopeCheck, value, 'envelope'), id })
  }
  const { type, id } = value
  const check = dataChecks.get(type)
  if (check === undefined) return fail('unknown_type', { type, id })

  // `ping` may come without data; every other message needs its object.
  const data = value.data === undefined && type === 'ping' ? {} : value.data
  if (!check.Check(data)) return fail('invalid_message', { message: describe(check, data, 'data'), type, id })
  return { ok: true, type, data, id } as InboundMessage
}

/** The type and id of a frame dropped unread (rate limits), for the error that answers it. */
export function frameLabels (raw: string): { type?: string, id?: string } {
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch {
    return {}
  }
  if (!envelopeCheck.Check(value)) return {}
  return { type: dataChecks.has(value.type) ? value.type : undefined, id: value.id }
}

/** The first schema error as "<where>: <what>", without echoing the value. */
function describe (check: TypeCheck<TSchema>, value: unknown, root: string): string {
  const first = check.Errors(value).First()
  if (first === undefined) return ERROR_MESSAGES.invalid_message
  return `${root}${first.path}: ${first.message}`
}

/** Serializes one outbound envelope. */
export function frame<T extends ServerMessageType> (type: T, data: ServerData<T>, id?: string): string {
  return id === undefined
    ? JSON.stringify({ type, data })
    : JSON.stringify({ type, data, id })
}
