'use strict'
// PM2: `pm2 start deploy/pm2/ecosystem.config.cjs` from the repository root,
// after `npm ci && npm run build`. Set PRIVYDROP_INSTANCES (default: one per
// CPU) and the server's variables in the environment or in .env. Run it on
// Node.js 22 or 24: Node.js 20 is end-of-life (see deploy/README.md).
//
// Cluster mode is safe only with Redis: each worker is a separate instance
// with its own sockets, and instances relay to each other through Redis
// pub/sub. With the in-memory store each worker would see only its own rooms,
// so this file refuses to start several workers without REDIS_URL/REDIS_HOST.
const os = require('node:os')
const { readFileSync } = require('node:fs')
const { join } = require('node:path')
const { parseEnv } = require('node:util')

const root = join(__dirname, '..', '..')
let fileEnv = {}
try {
  fileEnv = parseEnv(readFileSync(join(root, '.env'), 'utf8'))
} catch {}
const env = { ...fileEnv, ...process.env }

const requested = env.PRIVYDROP_INSTANCES ?? String(os.availableParallelism())
const instances = Number(requested)
if (!Number.isInteger(instances) || instances < 1) {
  throw new Error(`PRIVYDROP_INSTANCES must be a whole number ≥ 1 (got "${requested}")`)
}
const hasRedis = Boolean(env.REDIS_URL || env.REDIS_HOST)
if (instances > 1 && !hasRedis) {
  throw new Error(
    'privydrop: refusing PM2 cluster mode without Redis. Several workers on the in-memory store ' +
    'would each see only their own rooms. Set REDIS_URL (or REDIS_HOST), or PRIVYDROP_INSTANCES=1.'
  )
}

module.exports = {
  apps: [{
    name: 'privydrop-signaling',
    cwd: root,
    script: 'dist/server.js',
    node_args: '--enable-source-maps',
    exec_mode: instances > 1 ? 'cluster' : 'fork',
    instances,
    // Above SHUTDOWN_TIMEOUT_MS: SIGINT drains sockets (1001) before PM2 kills.
    kill_timeout: 15000,
    listen_timeout: 10000,
    max_memory_restart: '512M',
    env: { NODE_ENV: 'production' }
  }]
}
