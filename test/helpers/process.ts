import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { freePort } from './redis'

type Teardown = { teardown: (fn: () => unknown) => void }

export interface ServerProcess {
  child: ChildProcess
  port: number
  http: string
  ws: string
  output: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** Starts `node dist/server.js` as a real process on a free port and waits until it is ready. */
export async function startServer (t: Teardown, env: Record<string, string> = {}): Promise<ServerProcess> {
  if (!existsSync('dist/server.js')) throw new Error('dist/server.js missing: run npm run build (npm test does)')
  const port = await freePort()
  const child = spawn(process.execPath, ['dist/server.js'], {
    env: { PATH: process.env['PATH'], HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })

  const http = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}): ${out}`)
    try {
      if ((await fetch(`${http}/ready`)).ok) return { child, port, http, ws: `ws://127.0.0.1:${port}/ws`, output: () => out, exited }
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`server did not become healthy: ${out}`)
}
