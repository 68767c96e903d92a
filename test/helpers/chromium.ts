import { mkdirSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

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
