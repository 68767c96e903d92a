import { createHmac, randomBytes } from 'node:crypto'
import type { Config } from '../../schemas/config'
import type { IceServer } from '../../schemas/rest'
import { splitList } from '../config'

/**
 * TURN REST API credentials (coturn `use-auth-secret`): the username carries
 * its own expiry, the password is HMAC-SHA1(secret, username) in base64, so
 * coturn can check them without talking to this server.
 */
export function turnCredentials (secret: string, ttlS: number, id: string, nowMs = Date.now()) {
  const username = `${Math.floor(nowMs / 1000) + ttlS}:${id}`
  const credential = createHmac('sha1', secret).update(username).digest('base64')
  return { username, credential }
}

/**
 * The RTCIceServer list handed to browsers (REST and `welcome`). The URL
 * lists are parsed once here; each call only stamps fresh TURN credentials
 * for `id` (every WebSocket connection calls it).
 */
export function createIceServers (config: Config) {
  const fixed: IceServer[] = []
  const stun = splitList(config.STUN_URLS)
  if (stun.length > 0) fixed.push({ urls: stun })
  const turn = splitList(config.TURN_URLS)
  const secret = turn.length > 0 ? config.TURN_SECRET : undefined
  if (turn.length > 0 && secret === undefined && config.TURN_USERNAME !== undefined && config.TURN_CREDENTIAL !== undefined) {
    fixed.push({ urls: turn, username: config.TURN_USERNAME, credential: config.TURN_CREDENTIAL })
  }
  return (id = randomBytes(8).toString('base64url'), nowMs = Date.now()): IceServer[] =>
    secret === undefined
      ? fixed
      : [...fixed, { urls: turn, ...turnCredentials(secret, config.TURN_TTL_S, id, nowMs) }]
}
