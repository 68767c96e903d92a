import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import { buildApp } from '../src/app'
import { loadConfig } from '../src/config'
import { serverOptions } from '../src/server-options'
import { TEST_ENV } from './helper'

/*
 * LOG_REQUESTS: Fastify's access log (a line when a request comes in, one when
 * it completes) on by default; off, the server's own lines and the lines about
 * failed requests stay.
 */

async function logged (t: Test, logRequests: string): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    }
  })
  const env = { ...TEST_ENV, LOG_LEVEL: 'info', LOG_REQUESTS: logRequests }
  const options = serverOptions(loadConfig(env))
  const app = Fastify({ ...options, logger: { ...(typeof options.logger === 'object' ? options.logger : {}), stream } })
  await app.register(buildApp, { env })
  t.teardown(() => app.close())
  await app.ready()
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/api/create_room', payload: { roomId: 'access-log' } })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/no-such-route' })).statusCode, 404)
  return lines
}

t.test('LOG_REQUESTS=true (default): every request is logged coming in and completing', async (t) => {
  const lines = await logged(t, 'true')
  t.equal(lines.filter(l => l['msg'] === 'incoming request').length, 3)
  t.equal(lines.filter(l => l['msg'] === 'request completed').length, 3)
})

t.test('LOG_REQUESTS=false: no access lines; an unknown route is still logged', async (t) => {
  const lines = await logged(t, 'false')
  t.equal(lines.filter(l => l['msg'] === 'incoming request' || l['msg'] === 'request completed').length, 0)
  t.ok(lines.some(l => String(l['msg']).includes('not found')), 'the 404 line stays')
})
