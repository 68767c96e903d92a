/*
 * Transport for the generated-client tests: a browser WebSocket and a queue
 * of the frames it received. It knows nothing of the protocol: each client
 * instantiates it with the message union its generator produced, and `next`
 * narrows that union by `type`, so the frame types come from generated code.
 */

export interface Frame { type: string }

export class Socket<In extends Frame, Out extends Frame> {
  private readonly ws: WebSocket
  private readonly frames: In[] = []
  private readonly waiting: Array<() => void> = []
  readonly opened: Promise<void>

  constructor (url: string, private readonly parse: (raw: string) => In = raw => JSON.parse(raw) as In) {
    this.ws = new WebSocket(url)
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener('open', () => resolve())
      this.ws.addEventListener('error', () => reject(new Error(`cannot connect to ${url}`)))
    })
    this.ws.addEventListener('message', (event: MessageEvent) => {
      this.frames.push(this.parse(String(event.data)))
      for (const wake of this.waiting.splice(0)) wake()
    })
  }

  send (message: Out): void {
    this.ws.send(JSON.stringify(message))
  }

  /** The next frame of this type (frames of other types before it are skipped). */
  async next<T extends In['type']> (type: T, timeoutMs = 5000): Promise<Extract<In, { type: T }>> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const index = this.frames.findIndex(frame => frame.type === type)
      if (index >= 0) return this.frames.splice(0, index + 1).pop() as Extract<In, { type: T }>
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no ${type} frame within ${timeoutMs} ms`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiting.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  close (): void {
    this.ws.close()
  }
}

/** What every client reports, checked by test/generators.test.ts. */
export interface Report {
  generator: string
  roomId: string
  aId: string
  bId: string
  joined: boolean
  joinReplyId: string | undefined
  peersOfB: string[]
  readyPeer: string
  offerFrom: string
  offerSdp: string | undefined
  answerFrom: string
  pongId: string | undefined
  errorCode: string
  rest: Record<string, unknown>
}
