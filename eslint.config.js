'use strict'

const neostandard = require('neostandard')
const globals = require('globals')

module.exports = [
  ...neostandard({
    ts: true,
    ignores: [
      'dist/**', 'coverage/**', '.tap/**', 'node_modules/**', 'test/e2e/artifacts/**',
      // What npm run example:generated-client generates and bundles (gitignored).
      'examples/generated-client/generated/**', 'examples/generated-client/app.js'
    ]
  }),
  {
    // The demo runs in browsers.
    files: ['examples/**/*.js'],
    languageOptions: { globals: globals.browser }
  }
]
