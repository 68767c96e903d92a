import { join } from 'node:path'
import { existsSync } from 'node:fs'
import type { FastifyPluginAsync } from 'fastify'
import fastifyStatic from '@fastify/static'
import { packageRoot } from '../paths'

/**
 * GET /demo/: a two-tab file transfer over WebRTC, negotiated through /ws with
 * the typed client (served from the build at /demo/lib/). Registered only when
 * DEMO_ENABLED.
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
}

export default demoRoutes
