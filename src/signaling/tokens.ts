import * as crypto from 'node:crypto'

/*
 * Resume tokens are `<peerId>.<secret>`: the peer part finds the session, the
 * secret proves it. Only the SHA-256 of a secret is ever kept (here and in
 * Redis); the secret itself is sent once, in `welcome`.
 */

/**
 * One-shot SHA-256 (crypto.hash, Node ≥ 20.12) skips the Hash object that
 * createHash builds; both give the same digest.
 */
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'buffer') => Buffer }).hash
export const sha256 = oneShot !== undefined
  ? (secret: string): Buffer => oneShot('sha256', secret, 'buffer')
  : (secret: string): Buffer => crypto.createHash('sha256').update(secret).digest()

/*
 * Random bytes come from a pool refilled from the CSPRNG (as Node's own
 * randomUUID does): each call to randomBytes costs a trip into OpenSSL of
 * several µs whatever its size, and every connection needs 48 bytes. Each
 * byte of the pool is handed out once.
 */
const POOL_BYTES = 48 * 128
const pool = Buffer.alloc(POOL_BYTES)
let poolOffset = POOL_BYTES

/** `bytes` fresh random bytes as base64url. */
function randomText (bytes: number): string {
  if (poolOffset + bytes > POOL_BYTES) {
    crypto.randomFillSync(pool)
    poolOffset = 0
  }
  const text = pool.toString('base64url', poolOffset, poolOffset + bytes)
  poolOffset += bytes
  return text
}

export function newPeerId (): string {
  return randomText(16)
}

/** A fresh secret for `peerId`: the token for the client and the hash to keep. */
export function issueToken (peerId: string): { token: string, hash: Buffer } {
  const secret = randomText(32)
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
  return expected.length === given.length && crypto.timingSafeEqual(expected, given)
}
