import { parseArgs } from 'node:util'
import pino from 'pino'
import { loadConfig, readProcessEnv } from '../config'
import { clusterConfigured, createRedisClient, redisConfigured } from '../redis/client'
import { readReferrerCounts } from '../store/redis'
import { utcDay } from '../store/types'

const USAGE = `Usage: npm run export:tracking -- [--days N] [--date YYYY-MM-DD] [--format json|csv]

Prints daily referrer counts recorded by POST /api/set_track, read from the
Redis named by REDIS_URL (or REDIS_HOST/REDIS_PORT/REDIS_PASSWORD) under KEY_PREFIX.
  --days N        the last N UTC days, today included (default 30, the retention)
  --date DAY      one day only
  --format F      json (default) or csv (date,ref,count)`

function csvField (value: string): string {
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value
}

async function main (): Promise<number> {
  const { values } = parseArgs({
    options: {
      days: { type: 'string', default: '30' },
      date: { type: 'string' },
      format: { type: 'string', default: 'json' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) {
    process.stdout.write(USAGE + '\n')
    return 0
  }
  const days = Number(values.days)
  if (!Number.isInteger(days) || days < 1 || days > 366) throw new Error('--days must be a whole number from 1 to 366')
  if (values.date !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(values.date)) throw new Error('--date must be YYYY-MM-DD')
  if (values.format !== 'json' && values.format !== 'csv') throw new Error('--format must be json or csv')

  const config = loadConfig(readProcessEnv())
  if (!redisConfigured(config)) throw new Error('set REDIS_URL (or REDIS_HOST, REDIS_SENTINELS or REDIS_CLUSTER_NODES): referrer counts are only kept in Redis across restarts')

  const log = pino({ level: 'warn' }, pino.destination(2))
  const redis = createRedisClient(config, log, 'export')
  try {
    await redis.connect()
    const dayList = values.date !== undefined
      ? [values.date]
      : Array.from({ length: days }, (_, i) => utcDay(Date.now() - i * 86_400_000))
    const result: Record<string, Record<string, number>> = {}
    for (const day of dayList) result[day] = await readReferrerCounts(redis, config.KEY_PREFIX, day, clusterConfigured(config))

    if (values.format === 'json') {
      process.stdout.write(JSON.stringify(result, null, 2) + '\n')
    } else {
      const lines = ['date,ref,count']
      for (const [day, counts] of Object.entries(result)) {
        for (const [ref, count] of Object.entries(counts)) lines.push(`${day},${csvField(ref)},${count}`)
      }
      process.stdout.write(lines.join('\n') + '\n')
    }
    return 0
  } finally {
    redis.disconnect()
  }
}

main().then((code) => { process.exitCode = code }, (err: Error) => {
  process.stderr.write(`export:tracking: ${err.message}\n`)
  process.exitCode = 1
})
