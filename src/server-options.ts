import { LogController, type FastifyServerOptions, type FastifyReply, type FastifyRequest } from 'fastify'
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
    ...(!config.LOG_REQUESTS && { logController: new NoAccessLog() }),
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

/**
 * LOG_REQUESTS=false: Fastify's `incoming request` and `request completed`
 * lines are skipped before they are built. Its other lines stay: a request
 * that errored, an unknown route, a failed serialization or header write.
 * (`disableRequestLogging` would silence those too.)
 */
class NoAccessLog extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error !== null && error !== undefined) super.requestCompleted(error, request, reply)
  }
}
