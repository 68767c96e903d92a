import t from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { build } from 'esbuild'
import openapiTS, { astToString } from 'openapi-typescript'
import { TypeScriptFileGenerator } from '@asyncapi/modelina'
import { FetchingJSONSchemaStore, InputData, JSONSchemaInput, quicktype, type JSONSchema } from 'quicktype-core'
import { buildTestApp } from './helper'
import { listen } from './helpers/ws'
import type { Report } from './generated-clients/socket'

/*
 * What a team does with the published schemas: point third-party generators
 * at them, write a small client against the generated code only, compile it
 * with `tsc --strict` and run it against a live server. Four generators, each
 * into a temp dir (nothing generated is kept in the repository):
 *   openapi-typescript + openapi-fetch and @hey-api/openapi-ts (openapi.json),
 *   @asyncapi/modelina (asyncapi.json), quicktype (messages.schema.json).
 * The clients are test/generated-clients/*.ts; each runs a whole signaling
 * exchange in its own Node process with the browser WebSocket.
 */

const ROOT = process.cwd()
const asyncapi = JSON.parse(readFileSync('schemas/asyncapi.json', 'utf8')) as { components: { messages: Record<string, unknown> } }
const MESSAGES = Object.keys(asyncapi.components.messages)
const CLIENTS = ['openapi-fetch', 'hey-api', 'modelina', 'quicktype'] as const

async function generateOpenapiTypescript (dir: string): Promise<void> {
  const doc = JSON.parse(readFileSync('schemas/openapi.json', 'utf8')) as Parameters<typeof openapiTS>[0]
  mkdirSync(join(dir, 'openapi-typescript'))
  // rootTypes: every component also as a top-level named type (ClientJoin, ServerMessage, …).
  writeFileSync(join(dir, 'openapi-typescript', 'schema.ts'), astToString(await openapiTS(doc, { rootTypes: true, rootTypesNoSchemaPrefix: true })))
}

async function generateHeyApi (dir: string): Promise<void> {
  // Its CLI, as its docs show (the package is ESM-only; this project is CommonJS).
  await promisify(execFile)(process.execPath, [
    join(ROOT, 'node_modules', '@hey-api', 'openapi-ts', 'bin', 'run.js'), '--input', resolve('schemas/openapi.json'), '--output', join(dir, 'hey-api'),
    '--client', '@hey-api/client-fetch', '--plugins', '@hey-api/typescript', '@hey-api/sdk', '--silent', '--no-log-file'
  ], { cwd: dir })
}

async function generateModelina (dir: string): Promise<void> {
  const generator = new TypeScriptFileGenerator({
    modelType: 'interface',
    enumType: 'union',
    // Keep `type` as the property name (Modelina renames reserved words by default).
    rawPropertyNames: true,
    // Client payloads are open (the server ignores extra fields); no index maps in the models.
    processorOptions: { interpreter: { ignoreAdditionalProperties: true } }
  })
  await generator.generateToFiles(asyncapi, join(dir, 'modelina'), { exportType: 'named' }, true)
}

async function generateQuicktype (dir: string): Promise<void> {
  const bundle = JSON.parse(readFileSync('schemas/messages.schema.json', 'utf8')) as JSONSchema & { definitions: Record<string, unknown> }
  // One store serves the bundle under one address, so every definition is one type however many sources refer to it.
  class BundleStore extends FetchingJSONSchemaStore {
    override async fetch (address: string): Promise<JSONSchema | undefined> {
      return address.startsWith('messages.schema.json') ? bundle : await super.fetch(address)
    }
  }
  const input = new JSONSchemaInput(new BundleStore())
  for (const name of Object.keys(bundle.definitions)) await input.addSource({ name, uris: [`messages.schema.json#/definitions/${name}`] })
  const inputData = new InputData()
  inputData.addInput(input)
  const result = await quicktype({ inputData, lang: 'typescript' })
  mkdirSync(join(dir, 'quicktype'))
  writeFileSync(join(dir, 'quicktype', 'messages.ts'), result.lines.join('\n'))
}

function tsc (dir: string, files: string[]): { status: number | null, output: string } {
  const run = spawnSync(process.execPath, [
    join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict', '--target', 'ES2022', '--module', 'ESNext',
    '--moduleResolution', 'bundler', '--lib', 'ES2022,DOM', '--types', 'node', '--skipLibCheck', ...files
  ], { cwd: dir, encoding: 'utf8' })
  return { status: run.status, output: run.stdout + run.stderr }
}

/** All the generated sources of one generator, as one string. */
function generated (dir: string, sub: string): string {
  return readdirSync(join(dir, sub), { recursive: true, encoding: 'utf8' })
    .filter(name => name.endsWith('.ts'))
    .map(name => readFileSync(join(dir, sub, name), 'utf8'))
    .join('\n')
}

t.test('four generators turn the published schemas into clients that compile strictly and work against a live server', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-generators-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')

  await generateOpenapiTypescript(dir)
  await generateHeyApi(dir)
  await generateModelina(dir)
  await generateQuicktype(dir)

  t.test('each generator names every /ws message, and the unions where it can express them', async (t) => {
    const declares = (source: string, name: string) => new RegExp(`(export )?(type|interface|class) ${name}\\b`).test(source)
    for (const [sub, unions] of [['openapi-typescript', true], ['hey-api', true], ['modelina', true], ['quicktype', false]] as const) {
      const source = generated(dir, sub)
      t.same(MESSAGES.filter(name => !declares(source, name)), [], `${sub}: a named type for each of the ${MESSAGES.length} messages`)
      t.notMatch(source, /AnonymousSchema/, `${sub}: no anonymous types`)
      if (unions) {
        // A discriminated union: one member per message of that direction.
        for (const union of ['ClientMessage', 'ServerMessage']) {
          const members = MESSAGES.filter(name => name.startsWith(union.replace('Message', '')))
          // `X: A | B;` on one line inside openapi-typescript's components; `type X = …` up to a blank line elsewhere.
          const member = source.indexOf(`        ${union}: `)
          const declared = source.search(new RegExp(`type ${union} =`))
          const start = member >= 0 ? member : declared
          const end = start < 0 ? -1 : source.indexOf(member >= 0 ? '\n' : '\n\n', start)
          const body = start < 0 ? '' : source.slice(start, end < 0 ? undefined : end)
          t.same(members.filter(name => !new RegExp(`\\b${name}\\b`).test(body)), [], `${sub}: ${union} unites every ${union.replace('Message', '').toLowerCase()} message`)
        }
      }
    }
  })

  for (const name of readdirSync(join(ROOT, 'test', 'generated-clients'))) copyFileSync(join(ROOT, 'test', 'generated-clients', name), join(dir, name))
  const compiled = tsc(dir, CLIENTS.map(c => `${c}.ts`))
  t.equal(compiled.status, 0, `the four clients compile with tsc --strict\n${compiled.output}`)

  // And the check has teeth: a message the protocol does not have does not compile, with any generator.
  writeFileSync(join(dir, 'broken.ts'), [
    "import type { ClientMessage } from './modelina/ClientMessage'",
    "import type { ServerWelcome } from './hey-api/types.gen'",
    "export const m: ClientMessage = { type: 'join', data: { room: 'x' } }",
    'export const k = (w: ServerWelcome): string => w.data.sessionKey'
  ].join('\n'))
  const broken = tsc(dir, ['broken.ts'])
  t.match(broken.output, /room/, 'a misspelled field does not compile')
  t.match(broken.output, /sessionKey/, 'a field the server never sends does not compile')

  const app = await buildTestApp(t, { STUN_URLS: 'stun:stun.example.org:3478', API_RATE_LIMIT_MAX: '1000' })
  const { http } = await listen(t, app)
  for (const client of CLIENTS) {
    writeFileSync(join(dir, `main-${client}.ts`), [
      `import { run } from './${client}'`,
      'run(process.argv[2] ?? \'\').then(report => { process.stdout.write(JSON.stringify(report)) }, (err: unknown) => { console.error(err); process.exitCode = 1 })'
    ].join('\n'))
    await build({ entryPoints: [join(dir, `main-${client}.ts`)], bundle: true, format: 'esm', platform: 'node', outfile: join(dir, `${client}.mjs`), logLevel: 'silent' })
    // The browser WebSocket: global in Node 22, behind this flag in Node 20.
    const flags = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-websocket', '--no-warnings'] : []
    const { stdout } = await promisify(execFile)(process.execPath, [...flags, join(dir, `${client}.mjs`), http], { timeout: 30_000 })
    const report = JSON.parse(stdout) as Report
    t.comment(`${report.generator}: ${JSON.stringify(report.rest)}`)
    t.ok(report.joined, `${client}: joined the room`)
    t.equal(report.joinReplyId, 'j1', `${client}: the reply carries the request's id`)
    t.same(report.peersOfB, [report.aId], `${client}: the second peer sees the first`)
    t.equal(report.readyPeer, report.bId, `${client}: ready announces the second peer`)
    t.equal(report.offerFrom, report.aId, `${client}: the offer arrives stamped with its sender`)
    t.match(report.offerSdp, /^v=0 /, `${client}: the SDP arrives as sent`)
    t.equal(report.answerFrom, report.bId, `${client}: the answer comes back`)
    t.equal(report.pongId, 'p1', `${client}: ping is answered with its id`)
    t.equal(report.errorCode, 'peer_not_found', `${client}: an error frame is typed`)
    if (client === 'openapi-fetch' || client === 'hey-api') {
      t.same(report.rest, { available: false, badStatus: 400, badCode: 'FST_ERR_VALIDATION', rateLimitRemaining: report.rest['rateLimitRemaining'], ready: 'ready', iceServers: 1 }, `${client}: REST calls and a typed 400`)
      t.match(String(report.rest['rateLimitRemaining']), /^\d+$/, `${client}: reads the declared rate-limit header`)
    }
  }
})
