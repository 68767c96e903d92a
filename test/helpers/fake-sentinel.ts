import { createServer, type Socket } from 'node:net'

type Teardown = { teardown: (fn: () => unknown) => void }

/*
 * A Sentinel that answers just what ioredis asks (SENTINEL
 * get-master-addr-by-name / sentinels, CLIENT, SUBSCRIBE, PING), so a test
 * can hold a client's primary lookup and publish +switch-master at the moment
 * it chooses, which a real Sentinel's timing never guarantees.
 */

export interface FakeSentinel {
  port: number
  /** Primary lookups received so far. */
  readonly lookups: number
  /** Lookups held back, not answered yet. */
  readonly pending: number
  /** Connections subscribed to +switch-master (ioredis's failover detectors). */
  readonly subscribers: number
  /** Holds every primary lookup from now on until release(). */
  hold (): void
  /** Answers the held lookups and stops holding. */
  release (): void
  /** Publishes +switch-master to every subscriber (the primary's address stays the same). */
  switchMaster (): void
}

const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`
const array = (items: string[]): string => `*${items.length}\r\n${items.map(bulk).join('')}`

/** Parses the RESP arrays of bulk strings that clients send; returns what is left unparsed. */
function parse (buffer: Buffer, onCommand: (args: string[]) => void): Buffer {
  let at = 0
  for (;;) {
    const lineEnd = buffer.indexOf('\r\n', at)
    if (lineEnd === -1 || buffer[at] !== 0x2a /* '*' */) return buffer.subarray(at)
    const count = Number(buffer.toString('latin1', at + 1, lineEnd))
    let p = lineEnd + 2
    const args: string[] = []
    for (let i = 0; i < count; i++) {
      const end = buffer.indexOf('\r\n', p)
      if (end === -1) return buffer.subarray(at)
      const len = Number(buffer.toString('latin1', p + 1, end))
      if (buffer.length < end + 2 + len + 2) return buffer.subarray(at)
      args.push(buffer.toString('utf8', end + 2, end + 2 + len))
      p = end + 2 + len + 2
    }
    at = p
    onCommand(args)
  }
}

export async function startFakeSentinel (t: Teardown, primary: { host: string, port: number }, name = 'mymaster'): Promise<FakeSentinel> {
  const sockets = new Set<Socket>()
  const subscribed = new Set<Socket>()
  const held: Array<() => void> = []
  let holding = false
  let lookups = 0

  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => { sockets.delete(socket); subscribed.delete(socket) })
    socket.on('error', () => {})
    let rest: Buffer = Buffer.alloc(0)
    socket.on('data', (data: Buffer) => {
      rest = parse(Buffer.concat([rest, data]), (args) => {
        const command = args.map((a, i) => i < 2 ? a.toLowerCase() : a)
        if (command[0] === 'sentinel' && command[1] === 'get-master-addr-by-name' && command[2] === name) {
          lookups++
          const answer = (): void => { socket.write(array([primary.host, String(primary.port)])) }
          if (holding) held.push(answer)
          else answer()
        } else if (command[0] === 'sentinel' && command[1] === 'sentinels') {
          socket.write('*0\r\n')
        } else if (command[0] === 'subscribe') {
          subscribed.add(socket)
          socket.write(`*3\r\n${bulk('subscribe')}${bulk(args[1] ?? '')}:1\r\n`)
        } else if (command[0] === 'client') {
          socket.write('+OK\r\n')
        } else if (command[0] === 'ping') {
          socket.write('+PONG\r\n')
        } else {
          socket.write(`-ERR unknown command '${args[0] ?? ''}'\r\n`)
        }
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise(resolve => server.close(resolve))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')

  return {
    port: address.port,
    get lookups () { return lookups },
    get pending () { return held.length },
    get subscribers () { return subscribed.size },
    hold () { holding = true },
    release () {
      holding = false
      for (const answer of held.splice(0)) answer()
    },
    switchMaster () {
      const where = `${primary.host} ${primary.port}`
      for (const socket of subscribed) socket.write(array(['message', '+switch-master', `${name} ${where} ${where}`]))
    }
  }
}
