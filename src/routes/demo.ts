import { join } from 'node:path'
import { existsSync } from 'node:fs'
import type { FastifyPluginAsync } from 'fastify'
import fastifyStatic from '@fastify/static'
import { packageRoot } from '../paths'

/** The files of examples/generated-client that make the page (not its sources or generated code). */
const GENERATED_CLIENT_PAGE = new Set(['/', '/index.html', '/app.js', '/app.js.map'])

/**
 * GET /demo/: a two-tab file transfer over WebRTC, negotiated through /ws with
 * the typed client (served from the build at /demo/lib/). GET
 * /demo/generated-client/: the page written against @hey-api/openapi-ts's
 * output, once npm run example:generated-client has built it. Registered only
 * when DEMO_ENABLED.
 */
const demoRoutes: FastifyPluginAsync = async (fastify) => {
  const root = packageRoot()
  const clientDir = join(root, 'dist', 'client')
  if (!existsSync(join(clientDir, 'index.mjs'))) {
    fastify.log.warn('demo: dist/client is missing (run npm run build); /demo will not work')
  }
  fastify.get('/demo', { schema: { hide: true } }, (_request, reply) => reply.redirect('/demo/', 301))
  await fastify.register(fastifyStatic, { root: join(root, 'examples', 'demo'), prefix: '/demo/', decorateReply: false })
  await fastify.register(fastifyStatic, { root: clientDir, prefix: '/demo/lib/', decorateReply: false, allowedPath: (path) => path.endsWith('.mjs') || path.endsWith('.map') })

  const generatedClientDir = join(root, 'examples', 'generated-client')
  if (!existsSync(join(generatedClientDir, 'app.js'))) {
    // An optional example: not built is normal, so not a warning.
    fastify.log.info('demo: examples/generated-client/app.js is missing (run npm run example:generated-client); /demo/generated-client/ is not served')
    return
  }
  fastify.get('/demo/generated-client', { schema: { hide: true } }, (_request, reply) => reply.redirect('/demo/generated-client/', 301))
  await fastify.register(fastifyStatic, { root: generatedClientDir, prefix: '/demo/generated-client/', decorateReply: false, allowedPath: (path) => GENERATED_CLIENT_PAGE.has(path) })
}

export default demoRoutes
