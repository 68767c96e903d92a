import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { BusMessage } from '../signaling/bus'

/*
 * How bus messages travel in a Redis pub/sub payload. The header is a JSON
 * array on the first line; a delivery's client frame follows the newline
 * verbatim, so a relay is passed on without parsing or re-serialising it.
 * JSON.stringify escapes every control character inside strings, so no field
 * a client influences (ids, types, frames) can end the header early or forge
 * another message: the only raw newline is the one written here. A decoded
 * header is validated against its schema; anything else is dropped.
 */

const Str = Type.String()
const Int = Type.Integer({ minimum: 0 })
const EnvelopeSchema = Type.Object({ frame: Str, type: Str, from: Str, id: Str, epoch: Int, seq: Int, origin: Str })

const HeaderSchema = Type.Union([
  Type.Tuple([Type.Literal('D'), Str, Str, Str, Int, Str, Str, Type.Boolean(), Type.Array(Type.Tuple([Str, Int]))]),
  Type.Tuple([Type.Literal('F'), Str, Str, Str, Str]),
  Type.Tuple([Type.Literal('R'), Str, Str, Str, Str, Type.Union([Type.Literal('unavailable'), Type.Literal('peer_not_found'), Type.Literal('outcome_unknown')])]),
  Type.Tuple([Type.Literal('M'), Str, Str, Str, Str]),
  Type.Tuple([Type.Literal('T'), Str, Str]),
  Type.Tuple([Type.Literal('H'), Str, Str, Type.Array(Type.Tuple([Str, Int, Int, Int, Type.Array(Int)])), Type.Array(EnvelopeSchema)]),
  Type.Tuple([Type.Literal('L'), Str, Str, Str])
])
type Header = Static<typeof HeaderSchema>
const headerCheck = TypeCompiler.Compile(HeaderSchema)
/** Instance protocol 2: a batch's header, the length of each message in it (in string units). */
const batchCheck = TypeCompiler.Compile(Type.Tuple([Type.Literal('B'), Type.Array(Int, { minItems: 1 })]))
const BATCH_PREFIX = '["B",'

/**
 * Instance protocol 2: several encoded messages for one instance in one
 * pub/sub payload (one PUBLISH, one delivery to the subscriber instead of
 * one per message). A header line lists their lengths; the messages follow
 * verbatim, in order. Only sent to instances that advertise version 2.
 */
export function encodeBatch (payloads: readonly string[]): string {
  return `${JSON.stringify(['B', payloads.map(p => p.length)])}\n${payloads.join('')}`
}

/**
 * Parses a payload from another instance: one message (version 1) or a
 * batch of them (version 2). Null for a malformed payload; a null entry for a
 * malformed message in a batch (the caller drops those).
 */
export function decodePayload (payload: string): Array<BusMessage | null> | null {
  if (!payload.startsWith(BATCH_PREFIX)) return [decodeBus(payload)]
  const newline = payload.indexOf('\n')
  if (newline < 0) return null
  let header: unknown
  try {
    header = JSON.parse(payload.slice(0, newline))
  } catch {
    return null
  }
  if (!batchCheck.Check(header)) return null
  const lengths = header[1]
  let total = 0
  for (const length of lengths) total += length
  if (newline + 1 + total !== payload.length) return null
  const out: Array<BusMessage | null> = []
  let at = newline + 1
  for (const length of lengths) {
    out.push(decodeBus(payload.slice(at, at + length)))
    at += length
  }
  return out
}

export function encodeBus (msg: BusMessage): string {
  switch (msg.kind) {
    case 'D': return `${JSON.stringify(['D', msg.origin, msg.roomId, msg.from, msg.epoch, msg.type, msg.id, msg.broadcast, msg.targets])}\n${msg.frame}`
    case 'F': return JSON.stringify(['F', msg.origin, msg.from, msg.type, msg.id])
    case 'R': return JSON.stringify(['R', msg.origin, msg.from, msg.type, msg.id, msg.code])
    case 'M': return JSON.stringify(['M', msg.origin, msg.roomId, msg.peerId, msg.node])
    case 'T': return JSON.stringify(['T', msg.origin, msg.peerId])
    case 'H': return JSON.stringify(['H', msg.origin, msg.peerId, msg.baseline, msg.held])
    case 'L': return JSON.stringify(['L', msg.origin, msg.peerId, msg.roomId])
  }
}

/** Parses a payload from another instance; null for anything malformed (the caller drops it). */
export function decodeBus (payload: string): BusMessage | null {
  const newline = payload.indexOf('\n')
  let header: unknown
  try {
    header = JSON.parse(newline < 0 ? payload : payload.slice(0, newline))
  } catch {
    return null
  }
  if (!headerCheck.Check(header)) return null
  const h: Header = header
  // Only a delivery carries a frame after its header.
  if ((h[0] === 'D') !== (newline >= 0)) return null
  switch (h[0]) {
    case 'D': return { kind: 'D', origin: h[1], roomId: h[2], from: h[3], epoch: h[4], type: h[5], id: h[6], broadcast: h[7], targets: h[8], frame: payload.slice(newline + 1) }
    case 'F': return { kind: 'F', origin: h[1], from: h[2], type: h[3], id: h[4] }
    case 'R': return { kind: 'R', origin: h[1], from: h[2], type: h[3], id: h[4], code: h[5] }
    case 'M': return { kind: 'M', origin: h[1], roomId: h[2], peerId: h[3], node: h[4] }
    case 'T': return { kind: 'T', origin: h[1], peerId: h[2] }
    case 'H': return { kind: 'H', origin: h[1], peerId: h[2], baseline: h[3], held: h[4] }
    case 'L': return { kind: 'L', origin: h[1], peerId: h[2], roomId: h[3] }
  }
}
