import net from 'node:net'

/*
 * A TCP proxy on loopback that a test puts between one server process and
 * Redis, to cut that process off while the others keep Redis:
 * - `blackhole()`: connections stay open but no byte crosses in either
 *   direction (what either side writes is held, as TCP would keep
 *   retransmitting it), and new connections are accepted and held the same
 *   way, like a network path that drops packets;
 * - `reset()`: every connection is reset (RST) and new ones are reset at once,
 *   like a path that answers with resets and refusals;
 * - `heal()`: bytes flow again (a black-holed connection delivers what
 *   waited; reset ones are gone, and new connections go through).
 */

export interface TcpProxy {
  port: number
  blackhole (): void
  /** Commands reach Redis, replies do not (until heal): what runs there is never confirmed. */
  oneWay (): void
  reset (): void
  heal (): void
  close (): Promise<void>
}

type Mode = 'pass' | 'blackhole' | 'reset' | 'oneway'

/** One proxied connection: bytes held back in each direction while black-holed. */
interface Pair { client: net.Socket, upstream: net.Socket | null, up: Buffer[], down: Buffer[] }

export async function startTcpProxy (target: { host: string, port: number }): Promise<TcpProxy> {
  let mode: Mode = 'pass'
  const pairs = new Set<Pair>()

  // Bytes are read on both sides at all times and held while black-holed
  // (TCP would retransmit them once the path works again), so nothing
  // leaks through a flow-control event.
  const flush = (pair: Pair): void => {
    if (pair.upstream === null || (mode !== 'pass' && mode !== 'oneway')) return
    for (const chunk of pair.up.splice(0)) pair.upstream.write(chunk)
    if (mode === 'pass') for (const chunk of pair.down.splice(0)) pair.client.write(chunk)
  }

  const connectUpstream = (pair: Pair): void => {
    const upstream = net.connect(target.port, target.host)
    pair.upstream = upstream
    upstream.on('error', () => pair.client.destroy())
    upstream.on('close', () => { pair.client.destroy(); pairs.delete(pair) })
    upstream.on('data', (chunk: Buffer) => {
      pair.down.push(chunk)
      flush(pair)
    })
    upstream.on('connect', () => flush(pair))
  }

  const server = net.createServer((client) => {
    client.on('error', () => {})
    if (mode === 'reset') {
      client.resetAndDestroy()
      return
    }
    const pair: Pair = { client, upstream: null, up: [], down: [] }
    pairs.add(pair)
    client.on('close', () => { pair.upstream?.destroy(); pairs.delete(pair) })
    client.on('data', (chunk: Buffer) => {
      pair.up.push(chunk)
      flush(pair)
    })
    // A connection made while black-holed reaches Redis only after heal().
    if (mode !== 'blackhole') connectUpstream(pair)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port

  return {
    port,
    blackhole () {
      mode = 'blackhole'
    },
    oneWay () {
      mode = 'oneway'
    },
    reset () {
      mode = 'reset'
      for (const pair of [...pairs]) {
        pair.client.resetAndDestroy()
        pair.upstream?.resetAndDestroy()
        pairs.delete(pair)
      }
    },
    heal () {
      mode = 'pass'
      for (const pair of pairs) {
        if (pair.upstream === null) connectUpstream(pair)
        else flush(pair)
      }
    },
    async close () {
      for (const { client, upstream } of pairs) {
        client.destroy()
        upstream?.destroy()
      }
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
