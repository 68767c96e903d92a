import { createHash } from 'node:crypto'
import { createReadStream, readFileSync, statSync } from 'node:fs'
import type { FastifyPluginAsync, FastifyReply } from 'fastify'

/*
 * GET /docs/ws: the AsyncAPI document of /ws (served at /asyncapi.json by the
 * docs plugin) rendered by @asyncapi/react-component's standalone bundle.
 * Every file the page loads comes from this server, the bundle and its CSS
 * straight from the installed package: docs must not depend on (or leak
 * visits to) a CDN. Registered by the docs plugin only when DOCS_ENABLED.
 */

export const DOCS_WS_PATH = '/docs/ws'
const SCRIPT_PATH = `${DOCS_WS_PATH}/asyncapi-standalone.js`
const STYLES_PATH = `${DOCS_WS_PATH}/asyncapi.css`
const VIEWER_PATH = `${DOCS_WS_PATH}/viewer.js`

/**
 * The page's own script, in a file rather than inline so the CSP needs no
 * 'unsafe-inline' for scripts. The schema is fetched from the same origin.
 */
const VIEWER_JS = `AsyncApiStandalone.render({
  schema: { url: '/asyncapi.json' },
  config: { show: { sidebar: true } }
}, document.getElementById('asyncapi'))
`

/** The page's own few rules (the component's styles are in its CSS file). */
const PAGE_STYLE = `
  body { margin: 0; font-family: system-ui, sans-serif; }
  .docs-nav { padding: 0.5rem 1rem; border-bottom: 1px solid #ddd; font-size: 0.9rem; }
  .docs-nav a { margin-right: 1.5rem; }
`

/**
 * Same origin only, which also keeps the page from reaching a CDN by
 * accident. 'unsafe-eval': the bundled AsyncAPI parser validates the document
 * with ajv, which compiles its validators with new Function (without it the
 * page stays blank). The one inline style is allowed by its hash.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self' 'unsafe-eval'",
  `style-src 'self' 'sha256-${createHash('sha256').update(PAGE_STYLE).digest('base64')}'`,
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')

/**
 * The package's files, resolved once at start-up through Node's resolution
 * (the same from src/ and from dist/); a missing one fails the start, not a
 * request.
 */
function componentFiles () {
  const resolve = (file: string) => require.resolve(`@asyncapi/react-component/${file}`)
  const { version } = JSON.parse(readFileSync(resolve('package.json'), 'utf8')) as { version: string }
  return { version, script: resolve('browser/standalone/index.js'), styles: resolve('styles/default.min.css') }
}

function page (version: string): string {
  // ?v= changes with the package version, so the year-long cache of the
  // bundle and its CSS never serves an old copy after an upgrade.
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PrivyDrop signaling server: WebSocket protocol</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${STYLES_PATH}?v=${version}">
<style>${PAGE_STYLE}</style>
</head>
<body>
<nav class="docs-nav">
  <a href="/docs">REST API (Swagger UI)</a>
  <a href="/asyncapi.json">asyncapi.json</a>
</nav>
<div id="asyncapi"><noscript>This page needs JavaScript; the document itself is at /asyncapi.json.</noscript></div>
<script src="${SCRIPT_PATH}?v=${version}"></script>
<script src="${VIEWER_PATH}"></script>
</body>
</html>
`
}

function sendFile (reply: FastifyReply, path: string, type: string): FastifyReply {
  return reply
    .type(type)
    .header('content-length', statSync(path).size)
    .header('cache-control', 'public, max-age=31536000, immutable')
    .send(createReadStream(path))
}

const docsWs: FastifyPluginAsync = async (fastify) => {
  const files = componentFiles()
  const html = page(files.version)
  const hide = { schema: { hide: true } }

  fastify.get(DOCS_WS_PATH, hide, async (_request, reply) =>
    reply.type('text/html; charset=utf-8').header('content-security-policy', CSP).header('cache-control', 'no-cache').send(html))
  fastify.get(VIEWER_PATH, hide, async (_request, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(VIEWER_JS))
  fastify.get(SCRIPT_PATH, hide, async (_request, reply) => sendFile(reply, files.script, 'text/javascript; charset=utf-8'))
  fastify.get(STYLES_PATH, hide, async (_request, reply) => sendFile(reply, files.styles, 'text/css; charset=utf-8'))
}

export default docsWs
