import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { type Browser, type Page } from 'playwright-core'
import { ARTIFACTS, consoleSettled, launchChromium } from '../helpers/chromium'
import { startServer, type ServerProcess } from '../helpers/process'
import { startRedis } from '../helpers/redis'

/*
 * Real Chromium (Debian's /usr/bin/chromium), two pages of the demo, a 1 MiB
 * file over an RTCDataChannel negotiated through /ws. Run by `npm run
 * test:e2e` inside a network namespace of its own (netns-run.sh), so the
 * browser, the servers and WebRTC's traffic cannot leave it.
 */

const SERVER_ENV = { STUN_URLS: '', DISABLE_JOIN_RATE_LIMIT: 'true', LOG_LEVEL: 'warn' }

let browser: Browser
t.before(async () => {
  browser = await launchChromium({ webrtc: true })
})
t.teardown(() => browser?.close())

const demoState = <T>(page: Page, key: string): Promise<T> =>
  page.evaluate((k) => (globalThis as unknown as { demo: Record<string, unknown> }).demo[k], key) as Promise<T>

async function openDemo (t: Test, base: string, query: string, errors: string[]): Promise<Page> {
  const context = await browser.newContext()
  t.teardown(() => context.close())
  const page = await context.newPage()
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(`${base}/demo/?${query}`)
  await page.waitForFunction(() => (globalThis as unknown as { demo?: { joined: boolean } }).demo?.joined === true, null, { timeout: 15_000 })
  return page
}

async function transfer (t: Test, receiverServer: ServerProcess, senderServer: ServerProcess, receiverExtra = '', shot?: string) {
  const { roomId } = await (await fetch(`${senderServer.http}/api/get_room`)).json() as { roomId: string }
  const errors: string[] = []
  const receiver = await openDemo(t, receiverServer.http, `room=${roomId}${receiverExtra}`, errors)
  const receiverId = await demoState<string>(receiver, 'peerId')
  const sender = await openDemo(t, senderServer.http, `room=${roomId}`, errors)

  const data = randomBytes(1024 * 1024)
  const expected = createHash('sha256').update(data).digest('hex')
  await sender.setInputFiles('#file', { name: 'random.bin', mimeType: 'application/octet-stream', buffer: data })
  await receiver.waitForFunction(() => (globalThis as unknown as { demo: { receivedHash: string | null } }).demo.receivedHash !== null, null, { timeout: 60_000 })

  t.equal(await demoState(receiver, 'receivedHash'), expected, 'receiver\'s SHA-256 matches the file')
  t.equal(await demoState(sender, 'sentHash'), expected, 'sender hashed the same bytes')
  t.equal(await demoState(receiver, 'receivedBytes'), data.length)
  t.equal(await demoState(receiver, 'status'), 'received')
  await Promise.all([consoleSettled(receiver), consoleSettled(sender)])
  t.same(errors, [], 'no script errors on either page')
  if (shot !== undefined) {
    await receiver.screenshot({ path: `${ARTIFACTS}/${shot}-receiver.png`, fullPage: true })
    await sender.screenshot({ path: `${ARTIFACTS}/${shot}-sender.png`, fullPage: true })
  }
  return { receiver, sender, receiverId }
}

t.test('1 MiB between two pages through one in-memory instance', async (t) => {
  const server = await startServer(t, SERVER_ENV)
  await transfer(t, server, server, '', 'single')
})

t.test('1 MiB between two pages on two instances sharing Redis', async (t) => {
  const redis = await startRedis(t, { own: true })
  const env = { ...SERVER_ENV, REDIS_URL: redis.url, KEY_PREFIX: redis.prefix }
  const [one, two] = await Promise.all([startServer(t, { ...env, INSTANCE_ID: 'e2e-1' }), startServer(t, { ...env, INSTANCE_ID: 'e2e-2' })])
  if (one === undefined || two === undefined) throw new Error('two servers expected')
  await transfer(t, one, two, '', 'cluster')
})

t.test('1 MiB when the receiving page\'s socket drops and resumes mid-negotiation', async (t) => {
  const server = await startServer(t, SERVER_ENV)
  const { receiver, receiverId } = await transfer(t, server, server, '&drop=after-offer', 'resume')
  t.equal(await demoState(receiver, 'dropped'), true, 'the signaling connection was dropped after the offer')
  t.equal(await demoState(receiver, 'resumes'), 1, 'and resumed once')
  t.equal(await demoState(receiver, 'peerId'), receiverId, 'with the same peer id')
})
