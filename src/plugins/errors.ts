import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError } from 'fastify'

/**
 * One error handler for the whole app. 4xx errors keep their message (they
 * describe the caller's mistake, e.g. which body field failed validation);
 * 5xx errors are logged with their stack and answered with a generic message,
 * so internals never reach a client. The body is Fastify's standard shape.
 */
export default fp(async (fastify) => {
  fastify.setErrorHandler((err: FastifyError, request, reply) => {
    const statusCode = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600
      ? err.statusCode
      : 500
    const error = STATUS_CODES[statusCode] ?? 'Error'
    if (statusCode >= 500) {
      request.log.error({ err, req: request }, 'request failed')
      // A store outage has a safe, useful message of its own; anything else stays generic.
      const message = err.code === 'PRIVYDROP_STORE_UNAVAILABLE' ? err.message : 'Internal Server Error'
      return reply.status(statusCode).send({ statusCode, code: err.code, error, message })
    }
    request.log.info({ err: { code: err.code, message: err.message }, statusCode }, 'request rejected')
    return reply.status(statusCode).send({ statusCode, code: err.code, error, message: err.message })
  })
}, { name: 'errors', fastify: '5.x' })
