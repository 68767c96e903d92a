import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { LogsDebugBodySchema, SuccessSchema } from '../../../schemas/rest'
import { BODY_ERRORS, described, errorResponses, rateLimited } from '../../../schemas/common'

/** Browser debug lines, written to the server log at debug level. Registered only when LOGS_DEBUG_ENABLED. */
const logsRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const maxBytes = fastify.config.LOGS_DEBUG_MAX_BYTES
  fastify.post('/logs_debug', {
    schema: {
      operationId: 'logsDebug',
      tags: ['tracking'],
      summary: 'Write a client debug line to the server log',
      description: 'Logged at debug level, truncated to LOGS_DEBUG_MAX_BYTES. 404 when LOGS_DEBUG_ENABLED is off (the default in production).',
      body: LogsDebugBodySchema,
      response: rateLimited({ 200: described(SuccessSchema, 'Logged'), ...errorResponses(...BODY_ERRORS, 404, 429, 500) })
    }
  }, async (request) => {
    const { message, timestamp } = request.body
    const bytes = Buffer.from(message, 'utf8')
    const truncated = bytes.length > maxBytes
    request.log.debug({
      clientTimestamp: timestamp,
      clientMessage: truncated ? bytes.subarray(0, maxBytes).toString('utf8') : message,
      truncated
    }, 'client debug log')
    return { success: true }
  })
}

export default logsRoutes
