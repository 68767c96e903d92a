import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { type Browser, type Page } from 'playwright-core'
import { ARTIFACTS, consoleSettled, launchChromium } from '../helpers/chromium'
import { startServer } from '../helpers/process'

/*
 * Real Chromium, two pages of examples/demo/socket-io.html (served by the
 * server's /demo/ route, the bundle from /demo/lib/socket-io.mjs), driving
 * privydrop-signaling/socket.io the way the PrivyDrop web app's classes drive
 * socket.io-client: emit('join') + once('joinResponse') + off('joinResponse'),
 * initiator-online / recipient-ready, offer/answer/ice-candidate with `from`,
 * then 1 MiB over an RTCDataChannel. Run inside netns-run.sh like transfer.test.ts.
 */

// LEGACY_LEAVE_ROOM: the web app leaves with POST /api/leave_room { roomId, socketId }.
const SERVER_ENV = { STUN_URLS: '', DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: 'warn', DEMO_ENABLED: 'true', RESUME_GRACE_MS: '10000', LEGACY_LEAVE_ROOM: 'true' }

let browser: Browser
t.before(async () => {
  browser = await launchChromium({ webrtc: true })
})
t.teardown(() => browser?.close())

interface AppState {
  joined: boolean
  joinedBy: string[]
  ids: string[]
  disconnects: string[]
  errors: string[]
  signalingErrors: string[]
  peersLeft: string[]
  dropped: boolean
  status: string
  sentHash: string | null
  receivedHash: string | null
  receivedBytes: number
  log: string[]
}
const state = (page: Page): Promise<AppState> =>
  page.evaluate(() => JSON.parse(JSON.stringify((globalThis as unknown as { app: AppState }).app)) as AppState)

async function openPage (t: Test, base: string, query: string, errors: string[]): Promise<Page> {
  const context = await browser.newContext()
  t.teardown(() => context.close())
  const page = await context.newPage()
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(`${base}/demo/socket-io.html?${query}`)
  await page.waitForFunction(() => (globalThis as unknown as { app?: { joined: boolean } }).app?.joined === true, null, { timeout: 15_000 })
  return page
}

async function transfer (t: Test, receiverExtra: string, shot: string) {
  const server = await startServer(t, SERVER_ENV)
  const { roomId } = await (await fetch(`${server.http}/api/get_room`)).json() as { roomId: string }
  const errors: string[] = []
  const receiver = await openPage(t, server.http, `role=recipient&room=${roomId}${receiverExtra}`, errors)
  const sender = await openPage(t, server.http, `role=initiator&room=${roomId}`, errors)

  const data = randomBytes(1024 * 1024)
  const expected = createHash('sha256').update(data).digest('hex')
  await sender.setInputFiles('#file', { name: 'random.bin', mimeType: 'application/octet-stream', buffer: data })
  await receiver.waitForFunction(() => (globalThis as unknown as { app: AppState }).app.receivedHash !== null, null, { timeout: 60_000 })
  await receiver.screenshot({ path: `${ARTIFACTS}/socket-io-${shot}-receiver.png`, fullPage: true })

  const r = await state(receiver)
  const s = await state(sender)
  t.equal(r.receivedHash, expected, 'receiver\'s SHA-256 matches the file')
  t.equal(s.sentHash, expected, 'sender hashed the same bytes')
  t.equal(r.receivedBytes, data.length)
  t.equal(r.status, 'received')
  await Promise.all([consoleSettled(receiver), consoleSettled(sender)])
  t.same(errors, [], 'no script errors on either page')
  t.same([r.errors, s.errors], [[], []], 'no `error` event on either socket')
  t.same([r.signalingErrors, s.signalingErrors], [[], []], 'no refused message')
  t.equal(s.joinedBy[0], 'joinResponse', 'the join resolved through once(joinResponse)')
  t.equal(s.ids.length, 1)
  t.match(s.ids[0], /^[A-Za-z0-9_-]{16,}$/, 'socket.id is the server\'s peerId')

  // Leaving as the web app does (the legacy REST call): the other page hears it,
  // and the initiator can join another room (no already_in_room).
  await sender.evaluate(async () => { await (globalThis as unknown as { app: { leave: () => Promise<void> } }).app.leave() })
  await receiver.waitForFunction((id) => (globalThis as unknown as { app: AppState }).app.peersLeft.includes(id), s.ids[0] ?? '', { timeout: 10_000 })
  t.pass('the recipient got peer-disconnected for the initiator')
  const { roomId: next } = await (await fetch(`${server.http}/api/get_room`)).json() as { roomId: string }
  const joined = await sender.evaluate(async (id) => await (globalThis as unknown as { app: { joinOther: (id: string) => Promise<string> } }).app.joinOther(id), next)
  t.equal(joined, 'joined', 'after the legacy leave the initiator joins another room')
  return { receiver: r, sender: s }
}

t.test('1 MiB between two pages driving the socket.io look-alike as the web app does', async (t) => {
  const { receiver } = await transfer(t, '', 'plain')
  t.same(receiver.disconnects, [])
  t.equal(receiver.ids.length, 1)
})

t.test('the recipient\'s socket drops after the offer and resumes with the same id; the transfer completes', async (t) => {
  const { receiver } = await transfer(t, '&drop=after-offer', 'resume')
  t.equal(receiver.dropped, true, 'the socket was dropped after the offer')
  t.same(receiver.disconnects, ['transport close'], 'one disconnect, with socket.io\'s reason')
  t.equal(receiver.ids.length, 2, 'connect fired again after the resume')
  t.equal(receiver.ids[1], receiver.ids[0], 'with the same id')
  t.same(receiver.joinedBy.length, 2, 'and the web app rejoined its room')
})
