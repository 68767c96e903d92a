// Fails `npm test` when the signaling core and the mesh (src/signaling,
// src/cluster) fall under 90 % of lines in the last coverage run. c8's own
// check-coverage cannot be limited to two folders after source-map remapping,
// so this reads the json-summary c8 wrote (package.json "c8").
import { readFileSync } from 'node:fs'
import { relative } from 'node:path'

const REQUIRED = 90
const summary = JSON.parse(readFileSync('coverage/coverage-summary.json', 'utf8'))
let total = 0
let covered = 0
for (const [file, stats] of Object.entries(summary)) {
  if (!/^src\/(signaling|cluster)\//.test(relative('.', file))) continue
  total += stats.lines.total
  covered += stats.lines.covered
}
const pct = total === 0 ? 0 : 100 * covered / total
console.log(`coverage:check: src/signaling + src/cluster: ${covered}/${total} lines covered (${pct.toFixed(2)}%), ${REQUIRED}% required`)
process.exitCode = pct >= REQUIRED ? 0 : 1
