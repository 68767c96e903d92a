import { Type, type Static } from '@sinclair/typebox'

/*
 * Every setting the server reads, with its default. This one schema is what
 * @fastify/env validates the environment against, what `.env.example` and the
 * README's table document, and (through Static) the TypeScript type of
 * `fastify.config`. Booleans accept true/false, 1/0, yes/no and on/off, in
 * any case; an empty value is false.
 */
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development', description: 'Reported by /health; "production" flips the defaults of LOGS_DEBUG_ENABLED, DOCS_ENABLED, DEMO_ENABLED and METRICS_ON_MAIN_PORT to false' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3001 }),
  HOST: Type.String({ default: '0.0.0.0' }),
  // Prometheus: /metrics reveals process, runtime and load details, so production keeps it off the public port.
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'Port of a separate listener that serves only GET /metrics (default: none); must differ from PORT' })),
  METRICS_HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address of the METRICS_PORT listener' }),
  METRICS_ON_MAIN_PORT: Type.Boolean({ default: true, description: 'Also serve GET /metrics on PORT; defaults to false when NODE_ENV=production' }),
  LOG_LEVEL: Type.Union([
    Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'),
    Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')
  ], { default: 'info' }),
  LOG_REQUESTS: Type.Boolean({ default: true, description: 'Log every HTTP request and WebSocket upgrade at info (incoming request, request completed); false keeps the errors and the server\'s own lines' }),

  // Store: REDIS_URL wins; otherwise REDIS_HOST (+PORT/PASSWORD) as existing deployments set it; neither → in-memory.
  REDIS_URL: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_HOST: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 6379 }),
  REDIS_PASSWORD: Type.Optional(Type.String()),
  REDIS_SENTINELS: Type.Optional(Type.String({ minLength: 1, description: 'Comma-separated host:port of Redis Sentinels: the primary is found (and followed through a failover) by asking them; instead of REDIS_URL/REDIS_HOST' })),
  REDIS_SENTINEL_NAME: Type.String({ minLength: 1, default: 'mymaster', description: 'The monitored primary\'s name in Sentinel' }),
  REDIS_SENTINEL_PASSWORD: Type.Optional(Type.String({ description: 'Password of the Sentinels themselves (REDIS_PASSWORD is the primary\'s)' })),
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1, description: 'Comma-separated host:port of Redis Cluster nodes (seeds; the rest is discovered): keys of one room share a slot, instance channels use sharded pub/sub; instead of REDIS_URL/REDIS_HOST/REDIS_SENTINELS' })),
  REDIS_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 2000, description: 'Connect and per-command timeout; a request fails with 503 after at most about this long when Redis is unreachable' }),
  REDIS_HEALTH_INTERVAL_MS: Type.Integer({ minimum: 100, default: 1000, description: 'Redis health check (TIME) interval; a Redis that stops answering is failed fast (503, `unavailable`) from the first timeout until a check passes' }),
  REDIS_MAX_WRITE_BUFFER_BYTES: Type.Integer({ minimum: 65536, default: 16777216, description: 'Bytes waiting to be written to Redis beyond which new operations fail fast instead of queueing' }),
  KEY_PREFIX: Type.String({ default: '', maxLength: 64, description: 'Prepended to every Redis key and channel' }),

  CORS_ORIGIN: Type.String({ default: '*', description: 'Comma-separated allowed origins, or * for any' }),
  CORS_CREDENTIALS: Type.Boolean({ default: false, description: 'Answer credentialed requests (fetch with credentials: "include"): Access-Control-Allow-Credentials with the requesting origin echoed; needs an explicit CORS_ORIGIN list (not *)' }),
  TRUST_PROXY: Type.String({ default: 'false', description: 'false | true | hop count | comma-separated proxy IPs/CIDRs whose X-Forwarded-For is believed' }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, default: 16384 }),

  ROOM_TTL_S: Type.Integer({ minimum: 1, default: 86400, description: 'A room lives this long after its last join' }),
  ROOM_EMPTY_TTL_S: Type.Integer({ minimum: 1, default: 900, description: 'A room expires this long after its last member leaves' }),
  ROOM_MAX_PEERS: Type.Integer({ minimum: 2, maximum: 1000, default: 16 }),

  JOIN_RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: 2, description: 'Joins allowed per IP per window' }),
  JOIN_RATE_LIMIT_WINDOW_S: Type.Integer({ minimum: 1, default: 5 }),
  DISABLE_JOIN_RATE_LIMIT: Type.Boolean({ default: false }),
  API_RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: 120, description: 'REST requests per IP per API_RATE_LIMIT_WINDOW_S' }),
  API_RATE_LIMIT_WINDOW_S: Type.Integer({ minimum: 1, default: 60 }),
  TRACK_MAX_REFS_PER_DAY: Type.Integer({ minimum: 1, default: 1000, description: 'Distinct referrers POST /api/set_track counts per UTC day; later new ones are counted under `other`' }),

  LOGS_DEBUG_ENABLED: Type.Boolean({ default: true, description: 'POST /api/logs_debug; defaults to false when NODE_ENV=production' }),
  DOCS_ENABLED: Type.Boolean({ default: true, description: 'Swagger UI at /docs (/openapi.json is always served); defaults to false when NODE_ENV=production' }),
  DEMO_ENABLED: Type.Boolean({ default: true, description: 'File-transfer demo at /demo; defaults to false when NODE_ENV=production' }),
  LOGS_DEBUG_MAX_BYTES: Type.Integer({ minimum: 16, default: 2048 }),
  LEGACY_LEAVE_ROOM: Type.Boolean({ default: false, description: 'POST /api/leave_room also accepts the old body { roomId, socketId } (socketId = peer id) without a token: whoever knows a peer id can make that peer leave' }),

  STUN_URLS: Type.String({ default: 'stun:stun.l.google.com:19302', description: 'Comma-separated STUN URLs; empty for none' }),
  TURN_URLS: Type.String({ default: '', description: 'Comma-separated TURN URLs; empty for none' }),
  TURN_SECRET: Type.Optional(Type.String({ minLength: 1, description: 'coturn static-auth-secret: TURN entries get ephemeral HMAC credentials' })),
  TURN_USERNAME: Type.Optional(Type.String({ description: 'Static TURN username, used only without TURN_SECRET' })),
  TURN_CREDENTIAL: Type.Optional(Type.String({ description: 'Static TURN password, used only without TURN_SECRET' })),
  TURN_TTL_S: Type.Integer({ minimum: 60, default: 3600 }),

  // WebSocket endpoint (/ws)
  MAX_MESSAGE_BYTES: Type.Integer({ minimum: 1024, default: 65536, description: 'Largest inbound frame; larger ones close the connection with 1009' }),
  WS_RATE_PER_S: Type.Number({ exclusiveMinimum: 0, default: 50, description: 'Per-connection message rate (token bucket refill per second)' }),
  WS_RATE_BURST: Type.Integer({ minimum: 1, default: 200, description: 'Per-connection burst (token bucket size)' }),
  WS_ABUSE_MAX_DROPS: Type.Integer({ minimum: 1, default: 100, description: 'Rate-limited messages within 10 s after which the connection is closed with 1008' }),
  MAX_CONNECTIONS_PER_IP: Type.Integer({ minimum: 1, default: 64, description: 'WebSocket connections per client IP, sessions held for resume included; more are refused with 429 before the upgrade. In Redis mode counted across the fleet (each live instance\'s share in Redis; per instance while Redis is unreachable)' }),
  WS_MAX_QUEUED_MESSAGES: Type.Integer({ minimum: 1, default: 32, description: 'Messages of one connection waiting behind a join or leave in progress; further ones are answered rate_limited' }),
  WS_MAX_BUFFERED_BYTES: Type.Integer({ minimum: 1024, default: 1048576, description: 'Outgoing bytes the socket may buffer for one client; beyond it messages wait in its resume buffer (RESUME_BUFFER_MAX/RESUME_BUFFER_BYTES) and go out as it drains, further ones are refused with peer_not_found' }),
  HEARTBEAT_MS: Type.Integer({ minimum: 100, default: 25000, description: 'WS ping interval per connection (pings go out in up to 100 slices per interval, never all at once); two missed pongs terminate the connection' }),
  RESUME_GRACE_MS: Type.Integer({ minimum: 0, default: 10000, description: 'How long a dropped peer keeps its identity and room for ?resume=' }),
  RESUME_BUFFER_MAX: Type.Integer({ minimum: 0, default: 256, description: 'Messages kept for a dropped peer during the grace; further relays are refused with peer_not_found to their sender' }),
  RESUME_BUFFER_BYTES: Type.Integer({ minimum: 0, default: 1048576, description: 'Bytes of messages kept for a dropped peer during the grace (with RESUME_BUFFER_MAX, whichever is reached first)' }),

  // Several instances on one Redis
  INSTANCE_ID: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'Readable prefix of this instance\'s id in Redis (default: none); a random suffix is added per start, so a restarted instance never receives messages meant for its previous run' })),
  INSTANCE_DEAD_AFTER_MS: Type.Integer({ minimum: 300, default: 15000, description: 'An instance silent this long is dead: its peers are ended after RESUME_GRACE_MS unless they resume elsewhere' }),
  REDIS_EVICT_AFTER_MS: Type.Integer({ minimum: 0, default: 5000, description: 'Redis mode: an instance that cannot reach Redis this long (while other instances were seen alive) closes its WebSockets with 1012 and refuses upgrades until Redis answers, so its clients resume on instances that can reach it; keep it well under INSTANCE_DEAD_AFTER_MS; 0 = never' }),
  STALL_CHECK_MS: Type.Integer({ minimum: 0, default: 1000, description: 'Redis mode: after an event-loop stall longer than this (a frozen process or VM), the instance asks Redis which of its sessions are still its own before it acts on anything it read meanwhile; 0 = never' }),

  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 10000, description: 'Hard limit for a graceful shutdown' })
})

export type Config = Static<typeof ConfigSchema>
