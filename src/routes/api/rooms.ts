import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { CheckRoomResponseSchema, GetRoomResponseSchema, RoomBodySchema, SuccessMessageSchema } from '../../../schemas/rest'
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
    schema: { body: RoomBodySchema, response: { 200: SuccessMessageSchema } }
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
    schema: { response: { 200: GetRoomResponseSchema } }
  }, async (request) => {
    const roomId = await generateRoomId((id) => store.createRoom(id))
    request.log.info({ roomId }, 'room generated')
    return { roomId }
  })

  fastify.post('/check_room', {
    schema: { body: RoomBodySchema, response: { 200: CheckRoomResponseSchema } }
  }, async (request) => {
    return { available: !(await store.roomExists(request.body.roomId)) }
  })
}

export default roomRoutes
