import fp from 'fastify-plugin'

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: { readonly startedAt: number, shuttingDown: boolean }
  }
}

/** Tracks whether the instance is draining, so /ready can take it out of rotation first. */
export default fp(async (fastify) => {
  fastify.decorate('lifecycle', { startedAt: Date.now(), shuttingDown: false })
  fastify.addHook('preClose', async () => {
    fastify.lifecycle.shuttingDown = true
  })
}, { name: 'lifecycle', fastify: '5.x' })
