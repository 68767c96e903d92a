import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError } from 'fastify'

/**
 * One error handler for the whole app; the body is Fastify's standard shape.
 * 4xx errors keep their message (they describe the caller's mistake, e.g.
 * which body field failed validation). The project's own errors (code
 * PRIVYDROP_*, created with @fastify/error) are written for clients, so their
 * message is shown even for a 5xx (store outage, shutting down). Any other
 * 5xx is logged with its stack and answered generically, so internals never
 * reach a client.
 */
export default fp(async (fastify) => {
  fastify.setErrorHandler((err: FastifyError, request, reply) => {
    const statusCode = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600
      ? err.statusCode
      : 500
    const error = STATUS_CODES[statusCode] ?? 'Error'
    const ours = err.code?.startsWith('PRIVYDROP_') === true
    if (statusCode >= 500) {
      // Ours are expected conditions (outage, drain); anything else is a bug.
      if (ours) request.log.warn({ err, req: request }, 'request refused')
      else request.log.error({ err, req: request }, 'request failed')
      const message = ours ? err.message : 'Internal Server Error'
      return reply.status(statusCode).send({ statusCode, code: err.code, error, message })
    }
    request.log.info({ err: { code: err.code, message: err.message }, statusCode }, 'request rejected')
    return reply.status(statusCode).send({ statusCode, code: err.code, error, message: err.message })
  })
}, { name: 'errors', fastify: '5.x' })
