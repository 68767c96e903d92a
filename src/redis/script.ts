import type { Cluster, Redis } from 'ioredis'

/** A client scripts are defined on (src/redis/client.ts's RedisClient; imported from ioredis so client.ts can import the registry). */
type RedisClient = Redis | Cluster

/*
 * One Redis script, defined once: its keys and its arguments by name, its
 * Lua, the decoder of its reply and so the TypeScript type of a call. The
 * Lua reads its keys and arguments by the same names (`K.session`,
 * `A.peerId`): a prelude generated from the declared names binds them, so
 * the names in TypeScript and in Lua cannot drift apart, and no Lua indexes
 * KEYS or ARGV by position.
 *
 * Underneath it is ioredis' `defineCommand` (EVALSHA, falling back to EVAL),
 * so auto-pipelining and Redis Cluster routing work as for any command: a
 * script is routed by its first key, and every key it touches is passed in
 * KEYS. Scripts marked `fresh` refuse to run past the caller's deadline
 * (src/redis/link.ts), passed as the last ARGV.
 */

export type ScriptValue = string | number

/** Refuses to run past the deadline in ARGV[#ARGV] (ms, Redis clock). */
const FRESH = `do
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[#ARGV]) then
    return redis.error_reply('EXPIRED write arrived after its deadline')
  end
end
`

export interface ScriptSpec<K extends string, O extends string, KR extends string, A extends string, AR extends string, F extends boolean, R> {
  /** The ioredis command name (defineCommand). */
  name: string
  /** The keys every call passes, in KEYS order; the Lua reads `K.<name>`. */
  keys: readonly K[]
  /** Keys passed all together or not at all, after `keys`; `K.<name>` is nil when absent. */
  optionalKeys?: readonly O[]
  /** A list of further keys after those (`K.<name>` is a Lua list). */
  restKeys?: KR
  /** The arguments every call passes, in ARGV order; the Lua reads `A.<name>` (a string). */
  args: readonly A[]
  /** A list of further arguments after those (`A.<name>` is a Lua list). */
  restArgs?: AR
  /** Whether the script refuses to run past `deadline` (every write is). */
  fresh: F
  /** The body; the prelude binding `K` and `A` (and the deadline check) is prepended. */
  lua: string
  /** Turns the raw reply into the call's result. */
  decode: (reply: unknown) => R
}

type Named<N extends string, V> = { readonly [P in N]: V }
type AllOrNone<O extends string> = [O] extends [never] ? unknown : (Named<O, string> | { readonly [P in O]?: undefined })

/** The keys of a call: every named one, the optional group all or none, the rest as a list. */
export type ScriptKeys<K extends string, O extends string, KR extends string> = Named<K, string> & AllOrNone<O> & Named<KR, readonly string[]>
/** The arguments of a call: every named one, the rest as a list, and the deadline of a fresh script. */
export type ScriptArgs<A extends string, AR extends string, F extends boolean> =
  Named<A, ScriptValue> & Named<AR, readonly ScriptValue[]> & (F extends true ? { readonly deadline: number } : unknown)

export interface Script<KS, AS, R> {
  readonly name: string
  /** KEYS per call, or undefined when it varies (optional or rest keys). */
  readonly numberOfKeys: number | undefined
  readonly keyNames: readonly string[]
  readonly argNames: readonly string[]
  readonly fresh: boolean
  /** The whole Lua sent to Redis (prelude and body). */
  readonly lua: string
  /** The body as written, without the prelude. */
  readonly body: string
  /** KEYS then ARGV of one call, flat (the variable key count first when it varies). */
  // Properties, not methods: method parameters are bivariant, and a call
  // missing a key would then still type-check.
  readonly argv: (keys: KS, args: AS) => ScriptValue[]
  readonly decode: (reply: unknown) => R
}

/** A script of any signature (for lists of scripts). */
export type AnyScript = Script<never, never, unknown>

const LUA_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

function prelude (named: readonly string[], table: 'K' | 'A', source: 'KEYS' | 'ARGV', rest: string | undefined, restEnd: string): string {
  const fields = named.map((name, i) => `${name} = ${source}[${i + 1}]`)
  let lua = `local ${table} = {${fields.join(', ')}}\n`
  if (rest !== undefined) {
    lua += `${table}.${rest} = {}\nfor i = ${named.length + 1}, ${restEnd} do ${table}.${rest}[#${table}.${rest} + 1] = ${source}[i] end\n`
  }
  return lua
}

export function defineScript<
  K extends string, A extends string, R, F extends boolean,
  O extends string = never, KR extends string = never, AR extends string = never
> (spec: ScriptSpec<K, O, KR, A, AR, F, R>): Script<ScriptKeys<K, O, KR>, ScriptArgs<A, AR, F>, R> {
  const optional = spec.optionalKeys ?? []
  const keyNames = [...spec.keys, ...optional]
  const argNames = [...spec.args]
  const all = [...keyNames, ...argNames, ...(spec.restKeys === undefined ? [] : [spec.restKeys]), ...(spec.restArgs === undefined ? [] : [spec.restArgs])]
  for (const name of all) {
    if (!LUA_NAME.test(name)) throw new Error(`script ${spec.name}: "${name}" is not a Lua name`)
  }
  if (new Set([...keyNames, ...(spec.restKeys === undefined ? [] : [spec.restKeys])]).size !== keyNames.length + (spec.restKeys === undefined ? 0 : 1)) {
    throw new Error(`script ${spec.name}: a key name is declared twice`)
  }
  const variable = optional.length > 0 || spec.restKeys !== undefined
  const lua = (spec.fresh ? FRESH : '') +
    prelude(keyNames, 'K', 'KEYS', spec.restKeys, '#KEYS') +
    prelude(argNames, 'A', 'ARGV', spec.restArgs, spec.fresh ? '#ARGV - 1' : '#ARGV') +
    spec.lua.trim() + '\n'

  return {
    name: spec.name,
    numberOfKeys: variable ? undefined : keyNames.length,
    keyNames,
    argNames,
    fresh: spec.fresh,
    lua,
    body: spec.lua,
    decode: spec.decode,
    argv (keys, args) {
      const k = keys as Record<string, string | readonly string[] | undefined>
      const a = args as Record<string, ScriptValue | readonly ScriptValue[]>
      const flatKeys = spec.keys.map(name => k[name] as string)
      const present = optional.filter(name => k[name] !== undefined)
      if (present.length !== 0 && present.length !== optional.length) {
        throw new Error(`script ${spec.name}: the keys ${optional.join(', ')} go together`)
      }
      for (const name of present) flatKeys.push(k[name] as string)
      if (spec.restKeys !== undefined) flatKeys.push(...(k[spec.restKeys] as readonly string[]))
      const flatArgs: ScriptValue[] = spec.args.map(name => a[name] as ScriptValue)
      if (spec.restArgs !== undefined) flatArgs.push(...(a[spec.restArgs] as readonly ScriptValue[]))
      if (spec.fresh) flatArgs.push(a['deadline'] as number)
      return variable ? [flatKeys.length, ...flatKeys, ...flatArgs] : [...flatKeys, ...flatArgs]
    }
  }
}

type Runner = (...argv: ScriptValue[]) => Promise<unknown>

/** A client's scripts: `call(script, keys, args)` runs one of them with named keys and arguments. */
export type ScriptCaller = <KS, AS, R>(script: Script<KS, AS, R>, keys: NoInfer<KS>, args: NoInfer<AS>) => Promise<R>

/**
 * Defines these scripts on a client (ioredis `defineCommand`: EVALSHA with
 * an EVAL fallback, auto-pipelined like any command) and returns the way to
 * call them. Defining a script again on the same client is harmless (the
 * store and the mesh share one); calling one not given here is an error.
 */
export function scriptCaller (redis: RedisClient, scripts: readonly AnyScript[]): ScriptCaller {
  const byName = new Map<string, AnyScript>()
  for (const script of scripts) {
    // Two scripts of one name (the one-Redis and the cluster publish) on one client: a wiring mistake.
    if (byName.has(script.name) && byName.get(script.name) !== script) throw new Error(`two scripts named ${script.name}`)
    byName.set(script.name, script)
    redis.defineCommand(script.name, script.numberOfKeys === undefined ? { lua: script.lua } : { numberOfKeys: script.numberOfKeys, lua: script.lua })
  }
  const client = redis as unknown as Record<string, Runner>
  return async (script, keys, args) => {
    if (byName.get(script.name) !== script) throw new Error(`script ${script.name} is not defined on this client`)
    return script.decode(await (client[script.name] as Runner).apply(redis, script.argv(keys, args)))
  }
}
