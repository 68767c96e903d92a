'use strict'

const neostandard = require('neostandard')

module.exports = neostandard({
  ts: true,
  ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**']
})
