import t from 'tap'
import { createHmac } from 'node:crypto'
import { turnCredentials } from '../src/services/ice'
import { buildTestApp } from './helper'

t.test('TURN REST credentials follow coturn use-auth-secret', async (t) => {
  // Reference value computed with: printf '%s' '1700003600:peer-1' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64
  const creds = turnCredentials('north-secret', 3600, 'peer-1', 1_700_000_000_000)
  t.same(creds, { username: '1700003600:peer-1', credential: 'G+v6lC8wccHUoTO5ye78EHwV+UM=' })
})

t.test('ice_servers: default STUN, configurable away', async (t) => {
  const app = await buildTestApp(t)
  const res = await app.inject('/api/ice_servers')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  t.same(res.json(), { iceServers: [{ urls: ['stun:stun.l.google.com:19302'] }] })

  const none = await buildTestApp(t, { STUN_URLS: '' })
  t.same((await none.inject('/api/ice_servers')).json(), { iceServers: [] })
})

t.test('ice_servers: TURN entries carry ephemeral credentials valid TURN_TTL_S', async (t) => {
  const secret = 's3cret'
  const app = await buildTestApp(t, {
    STUN_URLS: 'stun:turn.example.com:3478',
    TURN_URLS: 'turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349',
    TURN_SECRET: secret,
    TURN_TTL_S: '600'
  })
  const before = Math.floor(Date.now() / 1000)
  const { iceServers } = (await app.inject('/api/ice_servers')).json()
  t.equal(iceServers.length, 2)
  t.same(iceServers[0], { urls: ['stun:turn.example.com:3478'] })
  const turn = iceServers[1]
  t.same(turn.urls, ['turn:turn.example.com:3478?transport=udp', 'turns:turn.example.com:5349'])
  const [expiry, id] = turn.username.split(':')
  t.ok(Number(expiry) >= before + 600 && Number(expiry) <= before + 602, 'expires TURN_TTL_S from now')
  t.ok(id.length >= 8, 'random id part')
  t.equal(turn.credential, createHmac('sha1', secret).update(turn.username).digest('base64'))

  const second = (await app.inject('/api/ice_servers')).json().iceServers[1]
  t.not(second.username, turn.username, 'a fresh username per request')
})

t.test('ice_servers: static TURN credentials without a secret', async (t) => {
  const app = await buildTestApp(t, { STUN_URLS: '', TURN_URLS: 'turn:t.example:3478', TURN_USERNAME: 'u', TURN_CREDENTIAL: 'p' })
  t.same((await app.inject('/api/ice_servers')).json(), { iceServers: [{ urls: ['turn:t.example:3478'], username: 'u', credential: 'p' }] })
})
