import fp from 'fastify-plugin'
import fastifyEnv from '@fastify/env'
import type { Config } from '../../schemas/config'
import { checkConfig, envOptions, readProcessEnv, type EnvSource } from '../config'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface ConfigPluginOptions {
  /** Variables to validate; defaults to the process environment (with `.env`). */
  env?: EnvSource
}

/** Validates the environment once and decorates `fastify.config`; everything else reads from there. */
export default fp<ConfigPluginOptions>(async (fastify, opts) => {
  await fastify.register(fastifyEnv, { confKey: 'config', ...envOptions(opts.env ?? readProcessEnv()) })
  checkConfig(fastify.config)
}, { name: 'config', fastify: '5.x' })
