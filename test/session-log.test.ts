import t from 'tap'
import pino from 'pino'
import { SessionLog } from '../src/signaling/session-log'
import type { Logger } from '../src/signaling/types'

t.test('a session logger writes the same lines as a pino child bound to its peer id and room', async (t) => {
  const lines: string[] = []
  const base = pino({ level: 'debug', timestamp: false, base: undefined }, { write: (s: string) => { lines.push(s.trim()) } }).child({ component: 'signaling' })
  const err = new Error('boom')
  const cases: Array<[roomId: string | null, (log: Logger) => void]> = [
    ['r1', log => log.info({ graceMs: 5 }, 'held')],
    [null, log => log.info('grace expired')],
    [null, log => log.info({ roomId: 'r1' }, 'left room')],
    ['r1', log => log.error({ err }, 'failed')],
    ['r1', log => log.warn(err)],
    ['r1', log => log.debug('connected')],
    ['r1', log => log.child({ component: 'x' }).info('c')]
  ]
  for (const [roomId, write] of cases) {
    write(base.child(roomId === null ? { peerId: 'p' } : { peerId: 'p', roomId }))
    write(new SessionLog(base, { peerId: 'p', roomId }))
  }
  t.equal(lines.length, cases.length * 2)
  for (let i = 0; i < lines.length; i += 2) t.equal(lines[i + 1], lines[i])
})

t.test('the bindings are read when a line is written: a room joined or left later shows', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const base = pino({ timestamp: false, base: undefined }, { write: (s: string) => { lines.push(JSON.parse(s)) } })
  const session = { peerId: 'p', roomId: null as string | null }
  const log = new SessionLog(base, session)
  log.info('before')
  session.roomId = 'r'
  log.info('in')
  t.same(lines, [{ level: 30, peerId: 'p', msg: 'before' }, { level: 30, peerId: 'p', roomId: 'r', msg: 'in' }])
})
