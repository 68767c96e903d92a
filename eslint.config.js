'use strict'

const neostandard = require('neostandard')
const globals = require('globals')

module.exports = [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**', 'test/e2e/artifacts/**']
  }),
  {
    // The demo runs in browsers.
    files: ['examples/**/*.js'],
    languageOptions: { globals: globals.browser }
  }
]
