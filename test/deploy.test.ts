import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, chmodSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'
import { ConfigSchema } from '../schemas/config'
import { loadConfig } from '../src/config'
import { startRedis, freePort } from './helpers/redis'
import { startServer } from './helpers/process'
import { connect, quietly } from './helpers/ws'
import { turnAllocate } from './helpers/turn'
import { turnCredentials } from '../src/services/ice'

/*
 * What can run here runs for real: nginx from deploy/nginx (ports templated)
 * in front of two server processes on one Redis, and coturn from
 * deploy/coturn (ports templated) checking the server's TURN credentials.
 * What needs a Docker engine or a cluster is checked statically.
 */

const CONFIG_KEYS = new Set(Object.keys(ConfigSchema.properties))

function nginxConfig (dir: string, listen: number, upstreams: [number, number]): string {
  const conf = readFileSync('deploy/nginx/privydrop.conf', 'utf8')
    .replace('server signal-1:3001', `server 127.0.0.1:${upstreams[0]}`)
    .replace('server signal-2:3001', `server 127.0.0.1:${upstreams[1]}`)
    .replace('listen 80;', `listen 127.0.0.1:${listen};`)
  writeFileSync(join(dir, 'privydrop.conf'), conf)
  for (const sub of ['body', 'proxy']) {
    mkdirSync(join(dir, sub), { recursive: true })
    chmodSync(join(dir, sub), 0o777)
  }
  // A minimal main file around the repository's server block, as in the nginx image.
  const main = join(dir, 'nginx.conf')
  writeFileSync(main, `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  include ${dir}/privydrop.conf;
}
`)
  return main
}

function get (url: string, opts: { localAddress?: string, headers?: Record<string, string>, method?: string, body?: string } = {}): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', localAddress: opts.localAddress, headers: { ...opts.headers, ...(opts.body !== undefined && { 'content-type': 'application/json' }) } }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => { body += d.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

t.test('nginx from deploy/nginx: WebSocket sessions across two instances, X-Forwarded-For handled', async (t) => {
  const redis = await startRedis(t, { own: true })
  const env = {
    REDIS_URL: redis.url,
    KEY_PREFIX: redis.prefix,
    DISABLE_JOIN_RATE_LIMIT: 'true',
    LOG_LEVEL: 'warn',
    // nginx connects from 127.0.0.1: only it is believed.
    TRUST_PROXY: '127.0.0.1',
    API_RATE_LIMIT_MAX: '3',
    API_RATE_LIMIT_WINDOW_S: '60'
  }
  const [one, two] = await Promise.all([startServer(t, { ...env, INSTANCE_ID: 'ngx-1' }), startServer(t, { ...env, INSTANCE_ID: 'ngx-2' })])
  if (one === undefined || two === undefined) throw new Error('two servers expected')
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-nginx-'))
  const port = await freePort()
  const main = nginxConfig(dir, port, [one.port, two.port])

  const check = spawnSync('nginx', ['-t', '-c', main, '-p', dir], { encoding: 'utf8' })
  t.equal(check.status, 0, `nginx -t accepts the configuration\n${check.stderr}`)

  const nginx = spawn('nginx', ['-c', main, '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(() => stop(nginx))
  const base = `http://127.0.0.1:${port}`
  let up = false
  for (let i = 0; i < 100 && !up; i++) {
    up = await get(`${base}/health`).then(r => r.status === 200, () => false)
    if (!up) await quietly(50)
  }
  t.ok(up, 'nginx proxies /health')
  t.equal((await get(`${base}/ready`)).status, 200)
  t.equal((await get(`${base}/metrics`)).status, 404, 'metrics are not exposed through the load balancer')

  // Two clients through nginx land on different instances (round robin).
  const { roomId } = JSON.parse((await get(`${base}/api/get_room`)).body) as { roomId: string }
  const a = await connect(t, `ws://127.0.0.1:${port}/ws`)
  const b = await connect(t, `ws://127.0.0.1:${port}/ws`)
  const gauge = async (http: string) => Number(/privydrop_ws_connections (\d+)/.exec((await get(`${http}/metrics`)).body)?.[1])
  t.same([await gauge(one.http), await gauge(two.http)], [1, 1], 'one client on each instance')
  t.equal((await a.request('join', { roomId }, 'joinResponse')).data.success, true)
  t.equal((await b.request('join', { roomId }, 'joinResponse')).data.success, true)
  t.same((await a.next('ready')).data, { peerId: b.peerId })
  b.send('offer', { peerId: a.peerId, offer: { type: 'offer', sdp: 'v=0' } })
  t.equal((await a.next('offer')).data.from, b.peerId, 'offer relayed across instances through nginx')
  a.send('answer', { peerId: b.peerId, answer: { type: 'answer', sdp: 'v=0' } })
  t.equal((await b.next('answer')).data.from, a.peerId)
  a.send('ice-candidate', { peerId: b.peerId, candidate: null })
  t.same((await b.next('ice-candidate')).data.candidate, null)
  await b.close()
  t.same((await a.next('peer-disconnected')).data, { peerId: b.peerId })

  // The rate limiter sees the client address nginx saw, whatever the client claims.
  const hit = (from: string, spoof?: string) => get(`${base}/api/check_room`, {
    method: 'POST', localAddress: from, body: JSON.stringify({ roomId: 'r' }), headers: spoof === undefined ? {} : { 'x-forwarded-for': spoof }
  })
  const statuses = []
  for (let i = 0; i < 4; i++) statuses.push((await hit('127.0.0.4', `10.9.9.${i}`)).status)
  t.same(statuses, [200, 200, 200, 429], 'spoofed X-Forwarded-For values are one client to the limiter')
  t.equal((await hit('127.0.0.5')).status, 200, 'another client behind nginx has its own budget')

  // Straight to an instance from an address that is not the proxy: the header is not believed.
  const direct = []
  for (let i = 0; i < 4; i++) direct.push((await get(`${one.http}/api/check_room`, { method: 'POST', localAddress: '127.0.0.6', body: JSON.stringify({ roomId: 'r' }), headers: { 'x-forwarded-for': `10.8.8.${i}` } })).status)
  t.same(direct, [200, 200, 200, 429], 'an untrusted source cannot pick its address with the header')
})

t.test('coturn from deploy/coturn accepts the server\'s TURN credentials and refuses expired or forged ones', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'privydrop-coturn-'))
  const port = await freePort()
  const relayMin = 40000 + Math.floor(Math.random() * 20000)
  const secret = 'test-secret-' + Math.random().toString(36).slice(2)
  const conf = readFileSync('deploy/coturn/turnserver.conf', 'utf8')
    .replace(/^listening-port=\d+/m, `listening-port=${port}`)
    .replace(/^tls-listening-port=\d+/m, 'no-tls\nno-dtls\nlistening-ip=127.0.0.1\nrelay-ip=127.0.0.1')
    .replace(/^min-port=\d+/m, `min-port=${relayMin}`)
    .replace(/^max-port=\d+/m, `max-port=${relayMin + 20}`)
  t.match(conf, /^use-auth-secret$/m, 'TURN REST API mode')
  t.match(conf, /^denied-peer-ip=127\.0\.0\.0-127\.255\.255\.255$/m, 'loopback peers denied')
  t.match(conf, /^denied-peer-ip=10\.0\.0\.0-10\.255\.255\.255$/m, 'private peers denied')
  writeFileSync(join(dir, 'turnserver.conf'), conf)
  const turn = spawn('turnserver', ['-c', join(dir, 'turnserver.conf'), `--static-auth-secret=${secret}`, `--pidfile=${dir}/turn.pid`], { stdio: 'ignore' })
  t.teardown(() => stop(turn))

  const server = await startServer(t, { TURN_SECRET: secret, TURN_URLS: `turn:127.0.0.1:${port}?transport=udp`, STUN_URLS: '', LOG_LEVEL: 'warn' })
  const { iceServers } = JSON.parse((await get(`${server.http}/api/ice_servers`)).body) as { iceServers: Array<{ username: string, credential: string }> }
  const creds = iceServers[0]
  if (creds === undefined) throw new Error('no TURN entry')
  let result: 'allocated' | number = -1
  for (let i = 0; i < 40 && result !== 'allocated'; i++) {
    result = await turnAllocate(port, creds.username, creds.credential).catch(() => -1)
    if (result !== 'allocated') await quietly(100)
  }
  t.equal(result, 'allocated', 'credentials from /api/ice_servers get an allocation')

  const ws = await connect(t, server.ws)
  const fromWelcome = ws.welcome?.data.iceServers[0] as { username: string, credential: string }
  t.equal(await turnAllocate(port, fromWelcome.username, fromWelcome.credential), 'allocated', 'and so do the ones in welcome')

  const expired = turnCredentials(secret, 60, 'old', Date.now() - 3600_000)
  t.equal(await turnAllocate(port, expired.username, expired.credential), 401, 'expired credentials refused')
  const forged = turnCredentials('not-the-secret', 600, 'x')
  t.equal(await turnAllocate(port, forged.username, forged.credential), 401, 'credentials signed with another secret refused')
  t.equal(await turnAllocate(port, creds.username.replace(/^\d+/, String(Math.floor(Date.now() / 1000) + 999_999)), creds.credential), 401, 'a username whose expiry was edited is refused')
})

t.test('docker-compose.yml: services, health-gated start-up, no eviction, known variables, metrics on the compose network only', async (t) => {
  const compose = parse(readFileSync('deploy/docker-compose.yml', 'utf8'), { merge: true }) as any
  const services = compose.services as Record<string, any>
  t.same(Object.keys(services).sort(), ['coturn', 'grafana', 'nginx', 'prometheus', 'redis', 'signal-1', 'signal-2'])
  const redisCmd = services['redis'].command.join(' ')
  t.match(redisCmd, /--maxmemory-policy noeviction/)
  t.match(redisCmd, /--appendonly yes/)
  for (const name of ['signal-1', 'signal-2']) {
    const svc = services[name]
    t.equal(svc.depends_on.redis.condition, 'service_healthy', `${name} waits for a healthy Redis`)
    t.ok(svc.healthcheck, `${name} has a healthcheck`)
    t.ok(existsSync(join('deploy', svc.build.context, svc.build.dockerfile)), `${name} builds from an existing Dockerfile`)
    for (const key of Object.keys(svc.environment)) t.ok(CONFIG_KEYS.has(key), `${name}: ${key} is a server variable`)
    t.equal(svc.environment.INSTANCE_ID, name)
    // In production /metrics is only on the separate listener: reachable on the compose network, never published.
    t.equal(svc.environment.NODE_ENV, 'production')
    t.match(svc.environment.METRICS_PORT, /^\d+$/, `${name} serves /metrics on METRICS_PORT`)
    t.equal(svc.environment.METRICS_HOST, '0.0.0.0', `${name}: the metrics listener is reachable from other containers`)
    t.same(svc.expose, [svc.environment.METRICS_PORT], `${name}: the metrics port is exposed to the compose network`)
    t.equal(svc.ports, undefined, `${name} publishes no port on the host`)
  }
  const published = Object.values(services).filter((svc: any) => svc.profiles === undefined).flatMap((svc: any) => (svc.ports ?? []) as string[])
  t.same(published, ['80:80'], 'only nginx publishes a port (and it answers 404 for /metrics)')
  for (const name of ['prometheus', 'grafana']) {
    t.same(services[name].profiles, ['monitoring'], `${name} is opt-in`)
    for (const port of services[name].ports as string[]) t.match(port, /^127\.0\.0\.1:\d+:\d+$/, `${name} is published on the host's loopback only`)
  }
  t.match(readFileSync('deploy/nginx/privydrop.conf', 'utf8'), /location = \/metrics \{\s*return 404;/)
  t.same(Object.values(services['nginx'].depends_on).map((d: any) => d.condition), ['service_healthy', 'service_healthy'])
  for (const svc of Object.values(services)) {
    for (const volume of (svc.volumes ?? []) as string[]) {
      const source = volume.split(':')[0] ?? ''
      if (source.startsWith('.')) t.ok(existsSync(join('deploy', source)), `mounted file ${source} exists`)
    }
    if (svc.image !== undefined) t.match(svc.image, /^(privydrop-signaling|redis|nginx|coturn\/coturn|prom\/prometheus|grafana\/grafana):[\w.-]+$/, `image ${svc.image} is pinned to a tag`)
  }
  t.same(services['coturn'].profiles, ['turn'], 'coturn is opt-in')
})

t.test('docker-compose.sentinel.yml: a replica and three Sentinels, the instances reach Redis through them only', async (t) => {
  const base = parse(readFileSync('deploy/docker-compose.yml', 'utf8'), { merge: true }) as any
  const override = parse(readFileSync('deploy/docker-compose.sentinel.yml', 'utf8'), { merge: true }) as any
  const services = override.services as Record<string, any>
  const sentinels = ['sentinel-1', 'sentinel-2', 'sentinel-3']
  t.match(services['redis-replica'].command.join(' '), /--replicaof redis 6379/, 'the replica follows the compose primary')
  for (const name of sentinels) {
    const script = services[name].command.join('\n')
    t.match(script, /sentinel monitor mymaster redis 6379 2/, `${name} monitors the primary by service name, quorum 2`)
    t.match(script, /sentinel resolve-hostnames yes/, `${name} can resolve service names`)
    t.match(script, /exec redis-server \S+ --sentinel/, `${name} runs Sentinel in the foreground`)
  }
  for (const name of ['signal-1', 'signal-2']) {
    // What the merged file gives the instance: base environment, then the override's.
    const env = { ...base.services[name].environment, ...services[name].environment }
    const config = loadConfig(env)
    t.equal(config.REDIS_URL, undefined, `${name}: REDIS_URL is blanked, so the Sentinels are the one way to Redis`)
    t.same(config.REDIS_SENTINELS?.split(',').map(s => s.split(':')[0]), sentinels, `${name} asks all three Sentinels`)
    t.equal(config.REDIS_SENTINEL_NAME, 'mymaster')
    for (const s of sentinels) t.equal(services[name].depends_on[s].condition, 'service_healthy', `${name} waits for ${s}`)
  }
})

t.test('Dockerfile: multi-stage, production deps only, non-root, healthcheck, exec-form node entry', async (t) => {
  const text = readFileSync('deploy/Dockerfile', 'utf8')
  const stages = [...text.matchAll(/^FROM \S+(?: AS (\w+))?$/gm)].map(m => m[1])
  t.ok(stages.length >= 3, `${stages.length} stages`)
  for (const m of text.matchAll(/^COPY --from=(\w+)/gm)) t.ok(stages.includes(m[1]), `stage ${m[1]} exists`)
  for (const m of text.matchAll(/^COPY (?!--from)(?:--chown=\S+ )?(.+) \S+$/gm)) {
    for (const source of (m[1] ?? '').split(' ')) t.ok(existsSync(source), `COPY source ${source} exists`)
  }
  t.match(text, /npm ci --omit=dev/, 'production dependencies only in the final image')
  t.match(text, /^USER node$/m, 'runs as a non-root user')
  t.match(text, /^HEALTHCHECK [^]*?\/health/m, 'HEALTHCHECK on /health')
  t.match(text, /^CMD \["node", .*"dist\/server\.js"\]$/m, 'exec form: signals reach node')
  t.ok(existsSync('dist/server.js'), 'npm run build produces what CMD runs')
  t.notMatch(readFileSync('.dockerignore', 'utf8'), /^examples$/m, 'the demo files reach the image')
})

t.test('Kubernetes manifests: probes, drain timing, disruption budget, known variables, metrics port and scrape annotations', async (t) => {
  const kustomization = parse(readFileSync('deploy/k8s/kustomization.yaml', 'utf8')) as { resources: string[] }
  const docs = kustomization.resources.flatMap((file) => {
    t.ok(existsSync(join('deploy/k8s', file)), `${file} exists`)
    return parseAllDocuments(readFileSync(join('deploy/k8s', file), 'utf8')).map(d => d.toJS() as any)
  })
  const kinds = docs.map(d => d.kind).sort()
  t.same(kinds, ['ConfigMap', 'Deployment', 'Namespace', 'PodDisruptionBudget', 'Service'])
  const config = docs.find(d => d.kind === 'ConfigMap').data as Record<string, string>
  for (const key of Object.keys(config)) t.ok(CONFIG_KEYS.has(key), `ConfigMap: ${key} is a server variable`)
  const pod = docs.find(d => d.kind === 'Deployment').spec.template.spec
  const container = pod.containers[0]
  t.equal(container.readinessProbe.httpGet.path, '/ready')
  t.equal(container.livenessProbe.httpGet.path, '/health')
  const preStopS = Number(container.lifecycle.preStop.exec.command[1])
  t.ok(pod.terminationGracePeriodSeconds > preStopS + Number(config['SHUTDOWN_TIMEOUT_MS']) / 1000, 'grace period covers preStop plus the shutdown timeout')
  t.equal(container.securityContext.readOnlyRootFilesystem, true)
  // /metrics on its own named port, announced to Prometheus on the pod template, not behind the Service.
  const metricsPort = Number(config['METRICS_PORT'])
  t.ok(Number.isInteger(metricsPort) && metricsPort !== Number(config['PORT']), 'METRICS_PORT set, apart from PORT')
  t.equal(config['METRICS_HOST'], '0.0.0.0', 'the metrics listener accepts the scraper\'s connections to the pod IP')
  t.same(container.ports.find((p: any) => p.name === 'metrics'), { name: 'metrics', containerPort: metricsPort }, 'container port "metrics"')
  t.same(docs.find(d => d.kind === 'Deployment').spec.template.metadata.annotations, {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': String(metricsPort),
    'prometheus.io/path': '/metrics'
  }, 'scrape annotations point at the metrics port')
  const service = docs.find(d => d.kind === 'Service').spec
  t.same(service.ports.map((p: any) => p.targetPort), ['http'], 'the Service does not expose the metrics port')
  t.ok(docs.find(d => d.kind === 'PodDisruptionBudget').spec.maxUnavailable >= 1)
})

t.test('Kubernetes probe CronJob: runs the image\'s built probe, one at a time, no retries, within its deadline, unprivileged', async (t) => {
  const [cron] = parseAllDocuments(readFileSync('deploy/k8s/probe-cronjob.yaml', 'utf8')).map(d => d.toJS() as any)
  t.equal(cron.kind, 'CronJob')
  t.equal(cron.apiVersion, 'batch/v1')
  t.equal(cron.metadata.namespace, 'privydrop')
  t.equal(cron.spec.concurrencyPolicy, 'Forbid')
  const job = cron.spec.jobTemplate.spec
  t.equal(job.backoffLimit, 0, 'a failed probe is not retried until it passes')
  const pod = job.template.spec
  t.equal(pod.restartPolicy, 'Never')
  t.equal(pod.securityContext.runAsNonRoot, true)
  const [container] = pod.containers
  t.equal(container.securityContext.readOnlyRootFilesystem, true)
  const deployment = parseAllDocuments(readFileSync('deploy/k8s/deployment.yaml', 'utf8')).map(d => d.toJS() as any)[0]
  t.equal(container.image.split(':')[0], deployment.spec.template.spec.containers[0].image, 'the server\'s image')
  t.same(container.command, ['node', 'dist/cli/probe.js'])
  t.ok(existsSync('dist/cli/probe.js'), 'npm run build produces what it runs (the Dockerfile copies dist/)')
  const args = container.args as string[]
  const option = (name: string): string | undefined => args[args.indexOf(name) + 1]
  t.match(option('--url'), /^https:\/\//, 'probes the public https URL')
  t.ok(job.activeDeadlineSeconds * 1000 > Number(option('--total-timeout-ms')), 'the Job outlives the probe\'s own total limit, so the probe reports its time-out')
  // The arguments are the probe's: with the URL pointed where nothing listens, it runs and fails at the first step (not a usage error).
  const dead = args.map(a => (a === option('--url') ? 'http://127.0.0.1:1' : a))
  const run = spawnSync(process.execPath, [...container.command.slice(1), ...dead], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env['PATH'] } })
  t.equal(run.status, 1, run.stderr)
  t.match(JSON.parse(run.stdout), { ok: false, failedStep: 'create_room' }, 'one JSON object, as the Job log')
})

t.test('PM2 ecosystem refuses cluster mode without Redis', async (t) => {
  const load = (env: Record<string, string>) => spawnSync(process.execPath, ['-e', 'console.log(JSON.stringify(require("./deploy/pm2/ecosystem.config.cjs")))'], {
    env: { PATH: process.env['PATH'], ...env }, encoding: 'utf8', cwd: process.cwd()
  })
  const refused = load({ PRIVYDROP_INSTANCES: '4' })
  t.not(refused.status, 0)
  t.match(refused.stderr, /refusing PM2 cluster mode without Redis/)
  const clustered = load({ PRIVYDROP_INSTANCES: '4', REDIS_URL: 'redis://127.0.0.1:6379' })
  t.equal(clustered.status, 0)
  t.match(JSON.parse(clustered.stdout).apps[0], { exec_mode: 'cluster', instances: 4, script: 'dist/server.js' })
  const single = load({ PRIVYDROP_INSTANCES: '1' })
  t.match(JSON.parse(single.stdout).apps[0], { exec_mode: 'fork', instances: 1 })
})

t.test('systemd unit: runs the build unprivileged and hardened, stops with SIGTERM in time', async (t) => {
  const unit = readFileSync('deploy/systemd/privydrop-signaling.service', 'utf8')
  t.match(unit, /^ExecStart=\/usr\/bin\/node .*dist\/server\.js$/m)
  t.match(unit, /^User=privydrop$/m)
  t.match(unit, /^KillSignal=SIGTERM$/m)
  for (const option of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'CapabilityBoundingSet=', 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX']) {
    t.match(unit, new RegExp(`^${option.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), option)
  }
  const stopS = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1])
  t.ok(stopS * 1000 > (ConfigSchema.properties.SHUTDOWN_TIMEOUT_MS.default as number), 'TimeoutStopSec above the shutdown timeout')
})
