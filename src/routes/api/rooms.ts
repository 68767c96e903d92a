import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { CheckRoomResponseSchema, GetRoomResponseSchema, RoomBodySchema, SuccessMessageSchema } from '../../../schemas/rest'
import { BODY_ERRORS, described, errorResponses, rateLimited } from '../../../schemas/common'
import { generateRoomId } from '../../services/room-ids'

/** Ids this long are chosen by users to share (e.g. a team room): creating one that exists is not an error. */
export const IDEMPOTENT_ROOM_ID_LENGTH = 8

// The web client compares these strings; they are the old backend's.
export const CREATE_ROOM_MESSAGES = {
  created: 'create room success',
  taken: 'roomId is already exists',
  kept: 'room already exists and is kept'
} as const

const roomRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { store } = fastify

  fastify.post('/create_room', {
    schema: {
      operationId: 'createRoom',
      tags: ['rooms'],
      summary: 'Create a room with a chosen id',
      description: '`success:false` when a live room has the id, except for ids of 8 or more characters, which are idempotent (the room is kept and its TTL not refreshed).',
      body: RoomBodySchema,
      response: rateLimited({ 200: described(SuccessMessageSchema, 'Created, kept, or taken (`success:false`)'), ...errorResponses(...BODY_ERRORS, 429, 500, 503) })
    }
  }, async (request) => {
    const { roomId } = request.body
    if (await store.createRoom(roomId)) {
      request.log.info({ roomId }, 'room created')
      return { success: true, message: CREATE_ROOM_MESSAGES.created }
    }
    // Kept as is: a long-id room is not refreshed by a repeated create.
    if (roomId.length >= IDEMPOTENT_ROOM_ID_LENGTH) return { success: true, message: CREATE_ROOM_MESSAGES.kept }
    return { success: false, message: CREATE_ROOM_MESSAGES.taken }
  })

  fastify.get('/get_room', {
    schema: {
      operationId: 'getRoom',
      tags: ['rooms'],
      summary: 'Generate and create a fresh room',
      description: '4 decimal digits while a free one is found within 10 tries, then 4 alphanumerics (50 tries), then longer ids. Never collides with a live room.',
      response: rateLimited({ 200: described(GetRoomResponseSchema, 'A new room, created'), ...errorResponses(429, 500, 503) })
    }
  }, async (request) => {
    const roomId = await generateRoomId((id) => store.createRoom(id))
    request.log.info({ roomId }, 'room generated')
    return { roomId }
  })

  fastify.post('/check_room', {
    schema: {
      operationId: 'checkRoom',
      tags: ['rooms'],
      summary: 'Check whether a room id is free',
      body: RoomBodySchema,
      response: rateLimited({ 200: described(CheckRoomResponseSchema, 'Whether the id is free'), ...errorResponses(...BODY_ERRORS, 429, 500, 503) })
    }
  }, async (request) => {
    return { available: !(await store.roomExists(request.body.roomId)) }
  })
}

export default roomRoutes
