import t from 'tap'
import { readFileSync } from 'node:fs'
import { buildTestApp } from './helper'

/** The src of every <script> and href of every stylesheet <link> of a page. */
function assetsOf (html: string): string[] {
  return [...html.matchAll(/<script[^>]*\ssrc="([^"]+)"|<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"/g)].map(m => m[1] ?? m[2] ?? '')
}

t.test('/docs/ws is a page of same-origin assets that renders /asyncapi.json and links back to /docs', async (t) => {
  const app = await buildTestApp(t, { DOCS_ENABLED: 'true' })
  const res = await app.inject('/docs/ws')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html/)
  const html = res.body
  t.notMatch(html, /https?:\/\//, 'no absolute URL anywhere: nothing from a CDN')
  const assets = assetsOf(html)
  t.ok(assets.length >= 3, 'the bundle, its CSS and the page\'s script')
  t.ok(assets.every(src => src.startsWith('/docs/ws/')), 'all served by this server under /docs/ws/')
  t.match(html, /<a href="\/docs">/, 'a link back to the REST docs')
  t.match(res.headers['content-security-policy'], /default-src 'none'/, 'a CSP that allows nothing but this origin')
  t.notMatch(res.headers['content-security-policy'], /https?:/, 'and names no other origin')

  const viewer = await app.inject(assets.find(src => src.startsWith('/docs/ws/viewer.js')) ?? '')
  t.equal(viewer.statusCode, 200)
  t.match(viewer.body, /AsyncApiStandalone\.render\(/)
  t.match(viewer.body, /url: '\/asyncapi\.json'/, 'the document comes from this server')
})

t.test('the bundle and its CSS are the installed package\'s files, cached for long', async (t) => {
  const app = await buildTestApp(t, { DOCS_ENABLED: 'true' })
  const html = (await app.inject('/docs/ws')).body
  const bundleUrl = assetsOf(html).find(src => src.startsWith('/docs/ws/asyncapi-standalone.js'))
  t.ok(bundleUrl, 'the page loads the standalone bundle')
  const { version } = JSON.parse(readFileSync(require.resolve('@asyncapi/react-component/package.json'), 'utf8')) as { version: string }
  t.equal(new URL(bundleUrl ?? '', 'http://x').searchParams.get('v'), version, 'its URL changes with the package version')

  const bundle = await app.inject(bundleUrl ?? '')
  t.equal(bundle.statusCode, 200)
  t.match(bundle.headers['content-type'], /^text\/javascript/)
  t.match(bundle.headers['cache-control'], /max-age=31536000/)
  t.equal(bundle.body, readFileSync(require.resolve('@asyncapi/react-component/browser/standalone/index.js'), 'utf8'))
  t.match(bundle.body, /AsyncApiStandalone/)

  const css = await app.inject('/docs/ws/asyncapi.css')
  t.equal(css.statusCode, 200)
  t.match(css.headers['content-type'], /^text\/css/)
  t.equal(css.body, readFileSync(require.resolve('@asyncapi/react-component/styles/default.min.css'), 'utf8'))
})

t.test('/asyncapi.json always serves the committed document, which OpenAPI does not list', async (t) => {
  for (const DOCS_ENABLED of ['true', 'false']) {
    const app = await buildTestApp(t, { DOCS_ENABLED })
    const res = await app.inject('/asyncapi.json')
    t.equal(res.statusCode, 200, `DOCS_ENABLED=${DOCS_ENABLED}`)
    t.same(res.json(), JSON.parse(readFileSync('schemas/asyncapi.json', 'utf8')))
    const paths = Object.keys((await app.inject('/openapi.json')).json().paths)
    t.same(paths.filter(path => path.startsWith('/docs') || path.endsWith('.json')), [], 'no docs route in OpenAPI')
  }
})

t.test('Swagger UI\'s description links to /docs/ws', async (t) => {
  const app = await buildTestApp(t, { DOCS_ENABLED: 'true' })
  t.match((await app.inject('/openapi.json')).json().info.description, /\]\(\/docs\/ws\)/)
})

t.test('with DOCS_ENABLED=false, /docs/ws and its files are 404', async (t) => {
  const app = await buildTestApp(t, { DOCS_ENABLED: 'false' })
  for (const url of ['/docs/ws', '/docs/ws/asyncapi-standalone.js', '/docs/ws/asyncapi.css', '/docs/ws/viewer.js', '/docs']) {
    t.equal((await app.inject(url)).statusCode, 404, url)
  }
})
