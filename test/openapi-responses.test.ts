import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import Ajv2020 from 'ajv/dist/2020'
import addFormats from 'ajv-formats'
import type { LightMyRequestResponse } from 'fastify'
import { buildTestApp } from './helper'

/*
 * openapi.json declares every response the server gives, and the server
 * gives only declared responses: each request below gets a real answer, and
 * its status, its body (against the declared schema, resolved through
 * components) and its rate-limit headers must be in the document.
 */

interface Doc {
  paths: Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown>, content?: Record<string, { schema: unknown }> }> }>>
  components: { schemas: Record<string, unknown>, headers: Record<string, unknown> }
}
const doc = JSON.parse(readFileSync('schemas/openapi.json', 'utf8')) as Doc

const ajv = new Ajv2020({ strict: false, allErrors: true })
addFormats(ajv)
ajv.addSchema({ $id: 'openapi', components: doc.components }, 'openapi')

function check (t: Test, path: string, method: string, res: LightMyRequestResponse): void {
  const operation = doc.paths[path]?.[method]
  const declared = operation?.responses[String(res.statusCode)]
  t.ok(declared, `${method.toUpperCase()} ${path} ${res.statusCode} is declared`)
  if (declared === undefined) return
  const schema = declared.content?.['application/json']?.schema
  if (schema !== undefined) {
    // $refs point into the document's components.
    const resolved = JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"openapi#/components/')) as object
    const valid = ajv.validate(resolved, res.json())
    t.ok(valid, `${method.toUpperCase()} ${path} ${res.statusCode} body matches its schema ${ajv.errorsText()}`)
  }
  const declaredHeaders = Object.keys(declared.headers ?? {}).sort()
  const sentHeaders = Object.keys(res.headers).filter(h => h.startsWith('x-ratelimit-') || h === 'retry-after').sort()
  t.same(sentHeaders, declaredHeaders, `${method.toUpperCase()} ${path} ${res.statusCode}: the rate-limit headers sent are the ones declared`)
}

t.test('every status the REST API answers with is declared, with its body and headers', async (t) => {
  const app = await buildTestApp(t, { LOGS_DEBUG_ENABLED: 'true', API_RATE_LIMIT_MAX: '1000', BODY_LIMIT_BYTES: '1024' })
  const json = { 'content-type': 'application/json' }
  const cases: Array<[string, string, () => Promise<LightMyRequestResponse>]> = [
    ['/api/create_room', 'post', () => app.inject({ method: 'POST', url: '/api/create_room', headers: json, payload: { roomId: 'lint-1' } })],
    ['/api/create_room', 'post', () => app.inject({ method: 'POST', url: '/api/create_room', headers: json, payload: { roomId: 'bad id!' } })],
    ['/api/create_room', 'post', () => app.inject({ method: 'POST', url: '/api/create_room', headers: json, payload: '{"roomId":' })],
    ['/api/create_room', 'post', () => app.inject({ method: 'POST', url: '/api/create_room', headers: json, payload: { roomId: 'x'.repeat(2000) } })],
    ['/api/create_room', 'post', () => app.inject({ method: 'POST', url: '/api/create_room', headers: { 'content-type': 'application/xml' }, payload: '<roomId/>' })],
    ['/api/get_room', 'get', () => app.inject('/api/get_room')],
    ['/api/check_room', 'post', () => app.inject({ method: 'POST', url: '/api/check_room', headers: json, payload: { roomId: 'lint-1' } })],
    ['/api/leave_room', 'post', () => app.inject({ method: 'POST', url: '/api/leave_room', headers: json, payload: { roomId: 'lint-1', peerId: 'nobody', token: 'nothing' } })],
    ['/api/set_track', 'post', () => app.inject({ method: 'POST', url: '/api/set_track', headers: json, payload: { ref: 'lint', timestamp: 1 } })],
    ['/api/logs_debug', 'post', () => app.inject({ method: 'POST', url: '/api/logs_debug', headers: json, payload: { message: 'hi', timestamp: 1 } })],
    ['/api/ice_servers', 'get', () => app.inject('/api/ice_servers')],
    ['/health', 'get', () => app.inject('/health')],
    ['/api/health', 'get', () => app.inject('/api/health')],
    ['/ready', 'get', () => app.inject('/ready')]
  ]
  const seen = new Set<string>()
  for (const [path, method, request] of cases) {
    const res = await request()
    seen.add(`${path} ${res.statusCode}`)
    check(t, path, method, res)
  }
  for (const status of ['/api/create_room 200', '/api/create_room 400', '/api/create_room 413', '/api/create_room 415', '/api/leave_room 403', '/ready 200']) {
    t.ok(seen.has(status), `exercised ${status}`)
  }
})

t.test('429 from the rate limiter and 503 from a server that is shutting down are declared too', async (t) => {
  const app = await buildTestApp(t, { API_RATE_LIMIT_MAX: '1' })
  check(t, '/api/get_room', 'get', await app.inject('/api/get_room'))
  const limited = await app.inject('/api/get_room')
  t.equal(limited.statusCode, 429)
  check(t, '/api/get_room', 'get', limited)

  app.lifecycle.shuttingDown = true
  const notReady = await app.inject('/ready')
  t.equal(notReady.statusCode, 503)
  check(t, '/ready', 'get', notReady)
})

t.test('404 of logs_debug when it is off is declared', async (t) => {
  const app = await buildTestApp(t, { LOGS_DEBUG_ENABLED: 'false' })
  const res = await app.inject({ method: 'POST', url: '/api/logs_debug', payload: { message: 'hi', timestamp: 1 } })
  t.equal(res.statusCode, 404)
  const declared = doc.paths['/api/logs_debug']?.['post']?.responses['404']
  t.ok(declared, '404 declared')
})
