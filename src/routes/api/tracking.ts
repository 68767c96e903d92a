import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { SuccessSchema, TrackBodySchema } from '../../../schemas/rest'
import { BODY_ERRORS, described, errorResponses, rateLimited } from '../../../schemas/common'
import { utcDay } from '../../store/types'

const trackingRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/set_track', {
    schema: {
      operationId: 'setTrack',
      tags: ['tracking'],
      summary: 'Count a referrer for today',
      description: 'Increments `ref` in the referrer counts of the server\'s UTC day (kept 30 days).',
      body: TrackBodySchema,
      response: rateLimited({ 200: described(SuccessSchema, 'Counted'), ...errorResponses(...BODY_ERRORS, 429, 500, 503) })
    }
  }, async (request) => {
    // The client's timestamp is not trusted: counts go to the server's day.
    await fastify.store.incrementReferrer(utcDay(), request.body.ref)
    return { success: true }
  })
}

export default trackingRoutes
