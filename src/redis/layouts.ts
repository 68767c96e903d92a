import { Cluster } from 'ioredis'
import type { Layout, LayoutOptions } from './layout'
import { createClusterLayout } from './cluster'
import { createStandaloneLayout } from './standalone'

/** The layout (layout.ts) for this client: Redis Cluster for a Cluster client, else one Redis. */
export function createLayout (opts: LayoutOptions): Layout {
  return opts.redis instanceof Cluster ? createClusterLayout(opts) : createStandaloneLayout(opts)
}
