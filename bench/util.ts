import { createServer } from 'node:net'

/** Shared by the bench drivers (run.ts, gc.ts). */

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** A port nothing listens on right now, on 127.0.0.1 (asked of the kernel). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}
