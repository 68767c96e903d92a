import t from 'tap'
import { spawnSync } from 'node:child_process'
import { loadConfig } from '../src/config'
import { startServer } from './helpers/process'

/*
 * CORS_CREDENTIALS: the PrivyDrop web app calls the API with
 * credentials: "include"; a browser only lets it read the answer when the
 * response names its exact origin and allows credentials. Real server
 * processes, real HTTP.
 */

const APP = 'https://app.privydrop.example'
const FOREIGN = 'https://evil.example'

function preflight (http: string, origin: string): Promise<Response> {
  return fetch(`${http}/api/check_room`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
  })
}

function credentialedPost (http: string, origin: string): Promise<Response> {
  // What a browser sends for fetch(..., { credentials: 'include' }) from `origin`.
  return fetch(`${http}/api/check_room`, {
    method: 'POST',
    headers: { origin, 'content-type': 'application/json', cookie: 'session=abc' },
    body: JSON.stringify({ roomId: 'cors-room' })
  })
}

t.test('CORS_CREDENTIALS=true: the listed origin may send credentialed requests, a foreign one gets no CORS headers', async (t) => {
  const server = await startServer(t, { CORS_ORIGIN: `https://other.example, ${APP}`, CORS_CREDENTIALS: 'true', LOG_LEVEL: 'warn' })

  const pre = await preflight(server.http, APP)
  t.equal(pre.status, 204, 'preflight from the app answered')
  t.equal(pre.headers.get('access-control-allow-origin'), APP, 'preflight echoes the exact origin')
  t.equal(pre.headers.get('access-control-allow-credentials'), 'true', 'preflight allows credentials')
  t.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/)
  t.match(pre.headers.get('vary') ?? '', /Origin/i, 'the answer varies by Origin')

  const res = await credentialedPost(server.http, APP)
  t.equal(res.status, 200)
  t.same(await res.json(), { available: true })
  t.equal(res.headers.get('access-control-allow-origin'), APP, 'the real request echoes the exact origin, never *')
  t.equal(res.headers.get('access-control-allow-credentials'), 'true', 'and allows credentials')

  const foreignPre = await preflight(server.http, FOREIGN)
  t.equal(foreignPre.headers.get('access-control-allow-origin'), null, 'foreign preflight: no allow-origin')
  t.equal(foreignPre.headers.get('access-control-allow-credentials'), null, 'foreign preflight: no allow-credentials')
  const foreign = await credentialedPost(server.http, FOREIGN)
  t.equal(foreign.headers.get('access-control-allow-origin'), null, 'foreign request: no allow-origin')
  t.equal(foreign.headers.get('access-control-allow-credentials'), null, 'foreign request: no allow-credentials')
})

t.test('CORS_CREDENTIALS off (the default): no Allow-Credentials, * stays allowed', async (t) => {
  const server = await startServer(t, { LOG_LEVEL: 'warn' })
  const res = await credentialedPost(server.http, APP)
  t.equal(res.status, 200)
  t.equal(res.headers.get('access-control-allow-credentials'), null)
  t.ok(res.headers.get('access-control-allow-origin') !== null, 'CORS_ORIGIN=* still answers any origin')
})

t.test('CORS_CREDENTIALS=true with CORS_ORIGIN=* or empty is refused at start-up, naming both variables', async (t) => {
  for (const origin of ['*', '', 'https://a.example,*']) {
    t.throws(() => loadConfig({ CORS_ORIGIN: origin, CORS_CREDENTIALS: 'true' }), /CORS_CREDENTIALS.*CORS_ORIGIN/, `loadConfig: CORS_ORIGIN=${JSON.stringify(origin)}`)
  }
  t.throws(() => loadConfig({ CORS_CREDENTIALS: 'yes' }), /CORS_CREDENTIALS.*CORS_ORIGIN/, 'the default CORS_ORIGIN (*) too')
  t.equal(loadConfig({ CORS_ORIGIN: APP, CORS_CREDENTIALS: 'true' }).CORS_CREDENTIALS, true, 'an explicit list is fine')
  t.equal(loadConfig({}).CORS_CREDENTIALS, false, 'off by default')

  const res = spawnSync(process.execPath, ['dist/server.js'], {
    env: { PATH: process.env['PATH'], HOST: '127.0.0.1', PORT: '0', CORS_ORIGIN: '*', CORS_CREDENTIALS: 'true' },
    encoding: 'utf8',
    timeout: 20_000
  })
  t.not(res.status, 0, 'the process exits non-zero')
  t.match(res.stderr + res.stdout, /CORS_CREDENTIALS/, 'the message names CORS_CREDENTIALS')
  t.match(res.stderr + res.stdout, /CORS_ORIGIN/, 'and CORS_ORIGIN')
})
