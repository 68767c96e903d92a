import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import { loadConfig, readProcessEnv } from './config'
import { buildApp } from './app'
import { serverOptions } from './server-options'
import type { Config } from '../schemas/config'
import { keepRelayGarbageYoung } from './runtime-flags'

async function main (): Promise<void> {
  keepRelayGarbageYoung()
  const env = readProcessEnv()
  let config: Config
  try {
    config = loadConfig(env)
  } catch (err) {
    // No logger exists yet; this message names the bad variable (e.g. "env/PORT must be integer").
    process.stderr.write(`privydrop: invalid configuration: ${(err as Error).message}\n`)
    process.exit(1)
  }

  const app = Fastify(serverOptions(config))
  await app.register(buildApp, { env })

  closeWithGrace({ delay: config.SHUTDOWN_TIMEOUT_MS, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an uncaught error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
  })

  try {
    await app.listen({ host: config.HOST, port: config.PORT })
  } catch (err) {
    app.log.fatal({ err }, 'could not start listening')
    process.exit(1)
  }
}

main().catch((err: unknown) => {
  // Only a bug in start-up code gets here; the error is printed without exposing config values.
  process.stderr.write(`privydrop: failed to start: ${(err as Error).message}\n`)
  process.exit(1)
})
