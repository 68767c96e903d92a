import type { FastifyServerOptions, FastifyRequest } from 'fastify'
import type { Config } from '../schemas/config'
import { trustProxyOption } from './config'

/**
 * Fastify constructor options for a given config; shared by the process entry
 * and the test helper so tests run the server exactly as deployed.
 */
export function serverOptions (config: Config): FastifyServerOptions {
  return {
    logger: {
      level: config.LOG_LEVEL,
      serializers: {
        // The path only: query strings can carry secrets (e.g. /ws?resume=<token>).
        req: (request: FastifyRequest) => ({
          method: request.method,
          url: request.url.split('?', 1)[0],
          remoteAddress: request.ip
        })
      }
    },
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    bodyLimit: config.BODY_LIMIT_BYTES,
    // Bodies are never coerced: { "roomId": 42 } is a 400, not room "42".
    ajv: { customOptions: { coerceTypes: false } },
    // Slowloris guard for plain HTTP; upgraded WebSockets are not affected.
    requestTimeout: 30_000,
    // Draining is handled by the lifecycle plugin (see there why).
    return503OnClosing: false,
    forceCloseConnections: 'idle'
  }
}
