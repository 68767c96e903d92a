import { randomInt } from 'node:crypto'

const DIGITS = '0123456789'
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/**
 * Protocol §1: short ids while they are free, longer ones as the space fills.
 * The last step (12 of 62 symbols, ~71 bits) cannot realistically collide.
 */
export const ROOM_ID_PLAN: ReadonlyArray<{ alphabet: string, length: number, tries: number }> = [
  { alphabet: DIGITS, length: 4, tries: 10 },
  { alphabet: ALPHANUMERIC, length: 4, tries: 50 },
  { alphabet: ALPHANUMERIC, length: 6, tries: 50 },
  { alphabet: ALPHANUMERIC, length: 8, tries: 50 },
  { alphabet: ALPHANUMERIC, length: 12, tries: 50 }
]

/** A CSPRNG-drawn string; randomInt is unbiased for any alphabet size. */
export function randomString (alphabet: string, length: number): string {
  let out = ''
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)]
  return out
}

/**
 * Draws ids along ROOM_ID_PLAN until `tryCreate` (an atomic create-if-absent)
 * accepts one, so a generated id never collides with a live room.
 */
export async function generateRoomId (
  tryCreate: (roomId: string) => Promise<boolean>,
  draw: (alphabet: string, length: number) => string = randomString
): Promise<string> {
  for (const { alphabet, length, tries } of ROOM_ID_PLAN) {
    for (let i = 0; i < tries; i++) {
      const roomId = draw(alphabet, length)
      if (await tryCreate(roomId)) return roomId
    }
  }
  throw new Error('room id space exhausted')
}
