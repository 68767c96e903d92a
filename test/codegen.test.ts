import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import openapiTS, { astToString } from 'openapi-typescript'
import { compile } from 'json-schema-to-typescript'

/*
 * What a client author does: generate types from the committed artifacts with
 * standard tools, then compile a client against them. A schema change that
 * breaks this client breaks the build.
 */
const CLIENT = `
import type { paths } from './rest'
import type { ClientJoin, ClientOffer, ServerJoinResponse, ServerWelcome, SignalingMessage } from './messages'

type CreateRoomBody = paths['/api/create_room']['post']['requestBody']['content']['application/json']
type CreateRoomReply = paths['/api/create_room']['post']['responses']['200']['content']['application/json']
type IceReply = paths['/api/ice_servers']['get']['responses']['200']['content']['application/json']

export async function createRoom (base: string, body: CreateRoomBody): Promise<boolean> {
  const res = await fetch(base + '/api/create_room', { method: 'POST', body: JSON.stringify(body) })
  const reply = await res.json() as CreateRoomReply
  return reply.success
}

export function firstIceUrl (reply: IceReply): string | undefined {
  const urls = reply.iceServers[0]?.urls
  return typeof urls === 'string' ? urls : urls?.[0]
}

export function join (send: (frame: string) => void, roomId: string): void {
  const msg: ClientJoin = { type: 'join', data: { roomId }, id: 'j1' }
  send(JSON.stringify(msg))
}

export function offer (to: string, sdp: string): ClientOffer {
  return { type: 'offer', data: { peerId: to, offer: { type: 'offer', sdp } } }
}

export function onFrame (raw: string): string | undefined {
  const msg = JSON.parse(raw) as SignalingMessage
  if (msg.type === 'welcome') return (msg as ServerWelcome).data.peerId
  if (msg.type === 'joinResponse') {
    const r = msg as ServerJoinResponse
    return r.data.success ? r.data.peers?.join(',') : r.data.code
  }
  return undefined
}
`

t.test('types generated from the published schemas type-check a client', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-codegen-'))
  const openapi = JSON.parse(readFileSync('schemas/openapi.json', 'utf8')) as Parameters<typeof openapiTS>[0]
  writeFileSync(join(dir, 'rest.ts'), astToString(await openapiTS(openapi)))
  const bundle = JSON.parse(readFileSync('schemas/messages.schema.json', 'utf8')) as Parameters<typeof compile>[0]
  writeFileSync(join(dir, 'messages.ts'), await compile(bundle, 'SignalingMessage', { bannerComment: '', additionalProperties: false }))
  writeFileSync(join(dir, 'client.ts'), CLIENT)

  const generated = readFileSync(join(dir, 'messages.ts'), 'utf8')
  for (const name of ['ClientJoin', 'ServerWelcome', 'ServerError', 'SignalingMessage']) t.match(generated, new RegExp(`export (type|interface) ${name}\\b`), `${name} generated`)

  const tsc = spawnSync(process.execPath, [
    'node_modules/typescript/bin/tsc', '--noEmit', '--strict', '--target', 'ES2022', '--module', 'ES2022', '--moduleResolution', 'bundler',
    '--lib', 'ES2022,DOM', '--skipLibCheck', join(dir, 'client.ts')
  ], { encoding: 'utf8' })
  t.equal(tsc.status, 0, `the client compiles against the generated types\n${tsc.stdout}${tsc.stderr}`)

  // And the check has teeth: a client using a field the schema does not have fails.
  writeFileSync(join(dir, 'broken.ts'), 'import type { ServerWelcome } from \'./messages\'\nexport const x = (w: ServerWelcome): string => w.data.sessionKey\n')
  const broken = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '--strict', '--skipLibCheck', join(dir, 'broken.ts')], { encoding: 'utf8' })
  t.not(broken.status, 0, 'a client using a field that does not exist does not compile')
})
