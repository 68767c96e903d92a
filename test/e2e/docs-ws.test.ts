import t from 'tap'
import { readFileSync } from 'node:fs'
import { type Browser } from 'playwright-core'
import { ARTIFACTS, consoleSettled, launchChromium } from '../helpers/chromium'
import { startServer } from '../helpers/process'

/*
 * Real Chromium opens /docs/ws on the built server (node dist/server.js) and
 * waits until @asyncapi/react-component has rendered every message of the
 * committed schemas/asyncapi.json. Every request the page makes must stay on
 * loopback: the bundle, its CSS and the document come from this server, not a
 * CDN. Run inside netns-run.sh like the other browser tests.
 */

const SERVER_ENV = { LOG_LEVEL: 'warn', DOCS_ENABLED: 'true', STUN_URLS: '' }
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])

/** The bits of the browser's globals used in page functions (this project's tsconfig has no DOM lib). */
interface PageGlobals {
  document: {
    body: { innerText: string }
    addEventListener: (type: 'securitypolicyviolation', fn: (e: { violatedDirective: string, blockedURI: string }) => void) => void
  }
}
const pageText = () => (globalThis as unknown as PageGlobals).document.body.innerText

let browser: Browser
t.before(async () => {
  browser = await launchChromium()
})
t.teardown(() => browser?.close())

t.test('/docs/ws renders every message of asyncapi.json from this server alone, and links back to /docs', async (t) => {
  const doc = JSON.parse(readFileSync('schemas/asyncapi.json', 'utf8')) as { components: { messages: Record<string, unknown> } }
  const names = Object.keys(doc.components.messages)
  t.ok(names.length > 0, 'the document has messages')

  const server = await startServer(t, SERVER_ENV)
  const context = await browser.newContext()
  t.teardown(() => context.close())
  const page = await context.newPage()
  const requests: string[] = []
  const errors: string[] = []
  const failed: string[] = []
  page.on('request', (request) => { requests.push(request.url()) })
  page.on('response', (response) => { if (response.status() >= 400) failed.push(`${response.status()} ${response.url()}`) })
  page.on('pageerror', (err) => { errors.push(err.message) })
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()) })
  // CSP violations are reported to the console as errors too, but this names them.
  await page.addInitScript(() => {
    (globalThis as unknown as PageGlobals).document.addEventListener('securitypolicyviolation', (e) => { console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`) })
  })

  const response = await page.goto(`${server.http}/docs/ws`)
  t.equal(response?.status(), 200)
  try {
    // The render is done when every message id is on the page (the component shows it as "Message ID").
    await page.waitForFunction((names) => {
      const text = (globalThis as unknown as PageGlobals).document.body.innerText
      return names.every(name => text.includes(name))
    }, names, { timeout: 30_000 })
  } catch (err) {
    await page.screenshot({ path: `${ARTIFACTS}/docs-ws-failed.png`, fullPage: true })
    throw err
  }
  await page.screenshot({ path: `${ARTIFACTS}/docs-ws.png` })

  const text = await page.evaluate(pageText)
  for (const name of names) t.ok(text.includes(name), `${name} is rendered`)
  t.notOk(await page.locator('.panel--error, .asyncapi__error').count(), 'the component shows no parse error')

  const back = page.locator('a[href="/docs"]')
  t.equal(await back.count(), 1, 'one link back to the REST docs')
  t.ok(await back.isVisible(), 'and it is visible')

  const remote = requests.filter(url => {
    const { protocol, hostname } = new URL(url)
    return !(protocol === 'data:' || protocol === 'blob:' || LOOPBACK.has(hostname))
  })
  t.same(remote, [], 'no request left loopback')
  t.ok(requests.some(url => new URL(url).pathname === '/asyncapi.json'), 'the document was fetched from this server')
  t.ok(requests.some(url => new URL(url).pathname === '/docs/ws/asyncapi-standalone.js'), 'and the bundle too')
  t.same(failed, [], 'every request succeeded')
  await consoleSettled(page)
  t.same(errors, [], 'no script errors, console errors or CSP violations')
})

t.test('Swagger UI at /docs links to /docs/ws, and the link leads there', async (t) => {
  const server = await startServer(t, SERVER_ENV)
  const context = await browser.newContext()
  t.teardown(() => context.close())
  const page = await context.newPage()
  const requests: string[] = []
  context.on('request', (request) => { requests.push(request.url()) })

  await page.goto(`${server.http}/docs`)
  // Swagger UI renders info.description (markdown) once it has loaded /docs/json.
  const link = page.locator('.swagger-ui .info a[href="/docs/ws"]')
  await link.waitFor({ timeout: 30_000 })
  // Swagger UI opens description links in a new tab (target=_blank).
  const [viewer] = await Promise.all([context.waitForEvent('page'), link.click()])
  await viewer.waitForURL(`${server.http}/docs/ws`)
  await viewer.locator('a[href="/docs"]').waitFor()
  t.pass('the link opened the AsyncAPI viewer')
  t.same(requests.filter(url => !LOOPBACK.has(new URL(url).hostname) && !url.startsWith('data:')), [], 'no request left loopback')
})
