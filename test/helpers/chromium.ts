import { randomUUID } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'

/** Where the browser tests leave their screenshots. */
export const ARTIFACTS = 'test/e2e/artifacts'

/**
 * Debian's Chromium, headless (playwright-core cannot download a browser
 * here). No background networking, component updates or sync: this machine's
 * network is closed and those only fail. With `webrtc`, ICE may use loopback
 * host candidates, which Chromium hides behind mDNS names by default.
 */
export async function launchChromium (opts: { webrtc?: boolean } = {}): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true })
  return await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu',
      ...(opts.webrtc === true ? ['--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'] : []),
      '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'
    ]
  })
}

/**
 * Waits until the test has every console message and uncaught error a page
 * reported so far: the page prints a marker, and once it has arrived so has
 * everything the page reported before it (console messages and uncaught
 * errors are the page's Runtime events, which reach the test in the order the
 * page reported them). For a check that there were none.
 */
export async function consoleSettled (page: Page, timeoutMs = 10_000): Promise<void> {
  const marker = `console-marker-${randomUUID()}`
  const arrived = page.waitForEvent('console', { predicate: message => message.text() === marker, timeout: timeoutMs })
  await page.evaluate((text) => { console.info(text) }, marker)
  await arrived
}
