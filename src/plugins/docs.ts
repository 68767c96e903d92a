import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { version } from '../../package.json'
import { factorOpenApi } from '../docs/factor'
import { buildAsyncApi, protocolSchemas } from '../docs/asyncapi'
import docsWs, { DOCS_WS_PATH } from './docs-ws'

export const OPENAPI_INFO = {
  title: 'PrivyDrop signaling server: REST API',
  version,
  // Markdown: Swagger UI renders the links, so /docs leads to the /ws viewer.
  description: `Rooms, ICE servers and health of the PrivyDrop signaling server. The WebSocket protocol on /ws is described by [asyncapi.json](/asyncapi.json), browsable at [${DOCS_WS_PATH}](${DOCS_WS_PATH}) when the server's docs are on. Its frame types are also in components.schemas here (ClientMessage, ServerMessage and one schema per message) for OpenAPI client generators.`,
  license: { name: 'MIT', identifier: 'MIT' }
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
      ],
      // Relative: the API is wherever this document was fetched from.
      servers: [{ url: '/', description: 'The server that serves this document' }],
      // Nothing needs credentials; leave_room authenticates with a token in its body.
      security: []
    },
    // Titled schemas become components.schemas with $refs (src/docs/factor.ts).
    // The /ws messages are there too, though no REST path uses them, so that
    // OpenAPI generators (openapi-typescript, @hey-api/openapi-ts) give a
    // client the frame types as well; asyncapi.json describes the protocol.
    transformObject: (documentObject) => 'openapiObject' in documentObject
      ? factorOpenApi(documentObject.openapiObject as Parameters<typeof factorOpenApi>[0], protocolSchemas('#/components/schemas/', 'openapi').schemas)
      : documentObject.swaggerObject
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
