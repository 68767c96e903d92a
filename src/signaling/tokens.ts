import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/*
 * Resume tokens are `<peerId>.<secret>`: the peer part finds the session, the
 * secret proves it. Only the SHA-256 of a secret is ever kept (here and in
 * Redis); the secret itself is sent once, in `welcome`.
 */

export const sha256 = (secret: string): Buffer => createHash('sha256').update(secret).digest()

export function newPeerId (): string {
  return randomBytes(16).toString('base64url')
}

/** A fresh secret for `peerId`: the token for the client and the hash to keep. */
export function issueToken (peerId: string): { token: string, hash: Buffer } {
  const secret = randomBytes(32).toString('base64url')
  return { token: `${peerId}.${secret}`, hash: sha256(secret) }
}

export function splitToken (token: string): { peerId: string, secret: string } | null {
  const dot = token.indexOf('.')
  if (dot <= 0 || dot === token.length - 1 || token.length > 256) return null
  return { peerId: token.slice(0, dot), secret: token.slice(dot + 1) }
}

/** Constant-time check of a secret against a stored hash (raw or hex). */
export function secretMatches (secret: string, stored: Buffer | string): boolean {
  const expected = typeof stored === 'string' ? Buffer.from(stored, 'hex') : stored
  const given = sha256(secret)
  return expected.length === given.length && timingSafeEqual(expected, given)
}
