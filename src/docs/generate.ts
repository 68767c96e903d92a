import Fastify from 'fastify'
import { buildApp } from '../app'
import { loadConfig } from '../config'
import { serverOptions } from '../server-options'
import { buildAsyncApi, buildJsonSchemaBundle } from './asyncapi'

/** The published artifacts, by file name under schemas/. */
export async function generateSchemaFiles (): Promise<Record<string, unknown>> {
  // Every optional route on, so the document is the same whatever the local config.
  const env = { LOG_LEVEL: 'silent', LOGS_DEBUG_ENABLED: 'true', DOCS_ENABLED: 'false', DEMO_ENABLED: 'false' }
  const app = Fastify(serverOptions(loadConfig(env)))
  await app.register(buildApp, { env })
  await app.ready()
  try {
    return {
      'openapi.json': app.swagger(),
      'asyncapi.json': buildAsyncApi(),
      'messages.schema.json': buildJsonSchemaBundle()
    }
  } finally {
    await app.close()
  }
}

export function serialize (doc: unknown): string {
  return JSON.stringify(doc, null, 2) + '\n'
}
