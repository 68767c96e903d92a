import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { generateSchemaFiles } from '../src/docs/generate'
import { buildTestApp } from './helper'

t.test('the committed schema files are what the code produces (run `npm run schemas` after a change)', async (t) => {
  const files = await generateSchemaFiles()
  t.same(Object.keys(files).sort(), ['asyncapi.json', 'messages.schema.json', 'openapi.json'])
  for (const [name, doc] of Object.entries(files)) {
    const committed = JSON.parse(readFileSync(`schemas/${name}`, 'utf8')) as unknown
    t.same(committed, JSON.parse(JSON.stringify(doc)), `schemas/${name} is up to date`)
  }
})

t.test('asyncapi.json covers every message, one operation per direction', async (t) => {
  const doc = JSON.parse(readFileSync('schemas/asyncapi.json', 'utf8')) as Record<string, any>
  const messages = Object.keys(doc['components'].messages)
  for (const name of ['ClientJoin', 'ClientLeave', 'ClientOffer', 'ClientAnswer', 'ClientIceCandidate', 'ClientInitiatorOnline', 'ClientRecipientReady', 'ClientPing',
    'ServerWelcome', 'ServerJoinResponse', 'ServerLeaveResponse', 'ServerReady', 'ServerOffer', 'ServerAnswer', 'ServerIceCandidate',
    'ServerInitiatorOnline', 'ServerRecipientReady', 'ServerPeerDisconnected', 'ServerPong', 'ServerError']) {
    t.ok(messages.includes(name), `${name} documented`)
  }
  t.match(doc['components'].messages.ClientJoin.summary, /Direct reply: joinResponse or error/, 'join says what answers it')
  const operationMessages = (op: string) => (doc['operations'][op].messages as Array<{ $ref: string }>).map(m => m.$ref.split('/').pop()).sort()
  t.same(operationMessages('receiveClientMessage'), messages.filter(n => n.startsWith('Client')).sort(), 'one receive operation carries every client message')
  t.same(operationMessages('sendServerMessage'), messages.filter(n => n.startsWith('Server')).sort(), 'one send operation carries every server message')
  t.match(doc['info'].description, /peer_not_found/, 'error codes documented')
})

t.test('/openapi.json serves the committed document; Swagger UI follows DOCS_ENABLED', async (t) => {
  const app = await buildTestApp(t, { LOGS_DEBUG_ENABLED: 'true', DOCS_ENABLED: 'true' })
  const served = (await app.inject('/openapi.json')).json()
  t.same(served, JSON.parse(readFileSync('schemas/openapi.json', 'utf8')))
  t.equal(served.openapi, '3.1.0')
  t.ok(served.paths['/api/create_room'].post.requestBody, 'bodies documented')
  t.notOk(served.paths['/ws'], 'the WebSocket is described by AsyncAPI, not OpenAPI')
  t.equal((await app.inject('/docs')).statusCode, 200)

  const prod = await buildTestApp(t, { NODE_ENV: 'production' })
  t.equal((await prod.inject('/docs')).statusCode, 404, 'no Swagger UI in production by default')
  t.equal((await prod.inject('/openapi.json')).statusCode, 200)
})

t.test('openapi.json: every operation has its own operationId, so generated functions get real names', async (t) => {
  const doc = JSON.parse(readFileSync('schemas/openapi.json', 'utf8')) as { paths: Record<string, Record<string, { operationId?: string }>> }
  const ids = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ at: `${method.toUpperCase()} ${path}`, id: op.operationId })))
  t.same(ids.filter(o => typeof o.id !== 'string' || !/^[a-z][A-Za-z]+$/.test(o.id)).map(o => o.at), [], 'each has a camelCase operationId')
  t.equal(new Set(ids.map(o => o.id)).size, ids.length, 'no two share one')
})

t.test('the schema files are published through the package exports', async (t) => {
  // A consumer generates from the installed package: privydrop-signaling/schemas/<name>.json.
  for (const name of ['openapi.json', 'asyncapi.json', 'messages.schema.json']) {
    t.equal(require.resolve(`privydrop-signaling/schemas/${name}`), join(process.cwd(), 'schemas', name), `${name} resolves by package name`)
  }
  t.throws(() => require.resolve('privydrop-signaling/schemas/ws.ts'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' }, 'the TypeBox sources are not part of the API')
  const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { encoding: 'utf8' })
  const files = (JSON.parse(pack.stdout) as Array<{ files: Array<{ path: string }> }>)[0]?.files.map(f => f.path) ?? []
  for (const name of ['openapi.json', 'asyncapi.json', 'messages.schema.json']) t.ok(files.includes(`schemas/${name}`), `schemas/${name} is in the package`)
})
