import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { version } from '../../package.json'
import { buildAsyncApi } from '../docs/asyncapi'
import docsWs, { DOCS_WS_PATH } from './docs-ws'

export const OPENAPI_INFO = {
  title: 'PrivyDrop signaling server: REST API',
  version,
  // Markdown: Swagger UI renders the links, so /docs leads to the /ws viewer.
  description: `Rooms, ICE servers and health of the PrivyDrop signaling server. The WebSocket protocol on /ws is described by [asyncapi.json](/asyncapi.json), browsable at [${DOCS_WS_PATH}](${DOCS_WS_PATH}) when the server's docs are on.`
}

/**
 * OpenAPI 3.1 built from the live route schemas (the same TypeBox schemas
 * that validate and serialize), served at /openapi.json, and the AsyncAPI
 * document of /ws at /asyncapi.json; when DOCS_ENABLED, Swagger UI at /docs
 * and the AsyncAPI viewer at /docs/ws. Registered before the routes so it
 * sees all of them.
 */
export default fp(async (fastify) => {
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: OPENAPI_INFO,
      tags: [
        { name: 'rooms', description: 'Creating, checking and leaving rooms' },
        { name: 'ice', description: 'STUN/TURN configuration for RTCPeerConnection' },
        { name: 'tracking', description: 'Referrer counts and client debug logs' },
        { name: 'health', description: 'Liveness and readiness probes' }
      ]
    }
  })
  fastify.get('/openapi.json', { schema: { hide: true } }, async () => fastify.swagger())
  // Built once: it depends only on the message schemas, never on config.
  const asyncApi = buildAsyncApi()
  fastify.get('/asyncapi.json', { schema: { hide: true } }, async () => asyncApi)
  if (fastify.config.DOCS_ENABLED) {
    await fastify.register(swaggerUi, { routePrefix: '/docs' })
    await fastify.register(docsWs)
  }
}, { name: 'docs', fastify: '5.x', dependencies: ['config'] })
