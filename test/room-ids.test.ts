import t from 'tap'
import { generateRoomId, randomString, ROOM_ID_PLAN } from '../src/services/room-ids'

t.test('draws 4 digits first, then 4 alphanumerics after 10 collisions, then longer', async (t) => {
  const attempts: string[] = []
  const roomId = await generateRoomId(async (id) => {
    attempts.push(id)
    return attempts.length === 61
  })
  t.equal(attempts.length, 61)
  for (const id of attempts.slice(0, 10)) t.match(id, /^\d{4}$/)
  for (const id of attempts.slice(10, 60)) t.match(id, /^[A-Za-z0-9]{4}$/)
  t.match(roomId, /^[A-Za-z0-9]{6}$/, 'the 61st try is the first 6-character id')
})

t.test('gives up with an error only after the whole plan', async (t) => {
  let tries = 0
  await t.rejects(generateRoomId(async () => { tries++; return false }), /exhausted/)
  t.equal(tries, ROOM_ID_PLAN.reduce((n, step) => n + step.tries, 0))
})

t.test('random strings use the whole alphabet', async (t) => {
  const seen = new Set(randomString('0123456789', 5000))
  t.equal(seen.size, 10)
  t.match(randomString('ab', 64), /^[ab]{64}$/)
})
