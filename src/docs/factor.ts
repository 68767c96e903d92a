/*
 * Named schemas for the published documents. The TypeBox schemas that
 * validate requests and frames are used inline (Fastify and the frame parser
 * compile exactly what the types say), and every schema a generator should
 * name carries a `title`. Here each titled schema becomes one entry of the
 * document's schema components, and every place it was used becomes a $ref
 * to it: generated code gets one `RoomId`, one `ErrorResponse`, one type per
 * message, instead of anonymous copies.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type JsonObject = { [key: string]: Json }

/** Keywords whose value is a schema, or a list or map of schemas (what TypeBox emits). */
const SCHEMA_KEYWORDS = new Set(['items', 'additionalProperties', 'not', 'contains'])
const SCHEMA_LISTS = new Set(['anyOf', 'oneOf', 'allOf', 'prefixItems'])
const SCHEMA_MAPS = new Set(['properties', 'patternProperties'])

const isObject = (value: Json | undefined): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

/** Collects named schemas into `components`, referred to as `refBase + title`. */
export class SchemaFactory {
  readonly components: Record<string, Json> = {}
  constructor (private readonly refBase: string) {}

  /** The schema with every titled schema inside it (itself included, unless `keepRoot`) replaced by a $ref. */
  factor (schema: Json, keepRoot = false): Json {
    if (!isObject(schema)) return schema
    const out: JsonObject = {}
    for (const [key, value] of Object.entries(schema)) {
      if (SCHEMA_KEYWORDS.has(key)) out[key] = this.factor(value)
      else if (SCHEMA_LISTS.has(key) && Array.isArray(value)) out[key] = value.map(item => this.factor(item))
      else if (SCHEMA_MAPS.has(key) && isObject(value)) out[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.factor(v)]))
      else out[key] = value
    }
    const title = out.title
    if (keepRoot || typeof title !== 'string') return out
    this.add(title, out)
    return { $ref: this.refBase + title }
  }

  /** Adds a named schema (already factored); one title names one schema. */
  add (name: string, schema: Json): void {
    const known = this.components[name]
    if (known === undefined) {
      this.components[name] = schema
    } else if (JSON.stringify(known) !== JSON.stringify(schema)) {
      throw new Error(`two different schemas are titled ${name}: give one of them another title`)
    }
  }

  /** Adds a component (factored already) under `name` and returns the $ref to it. */
  named (name: string, component: Json): Json {
    this.add(name, component)
    return { $ref: this.refBase + name }
  }

  /** The components sorted by name, so the documents diff well. */
  sorted (): Record<string, Json> {
    return Object.fromEntries(Object.entries(this.components).sort(([a], [b]) => a.localeCompare(b)))
  }
}

/** Plain JSON of a TypeBox schema (drops its symbols). */
export function plain (value: unknown): Json {
  return JSON.parse(JSON.stringify(value)) as Json
}

/**
 * OpenAPI 3.1: every titled schema of request bodies, parameters, responses
 * and response headers moves to components.schemas, beside `extra`.
 */
export function factorOpenApi (doc: JsonObject, extra: Record<string, Json> = {}): JsonObject {
  const factory = new SchemaFactory('#/components/schemas/')
  // Named schemas no path uses (the /ws messages), checked against the paths' own.
  for (const [name, schema] of Object.entries(extra)) factory.add(name, schema)
  // Response headers (the rate limiter's) are declared once, by name.
  const headers = new SchemaFactory('#/components/headers/')
  const mediaMap = (content: Json | undefined): void => {
    if (!isObject(content)) return
    for (const media of Object.values(content)) if (isObject(media) && media.schema !== undefined) media.schema = factory.factor(media.schema)
  }
  const paths = isObject(doc.paths) ? doc.paths : {}
  for (const item of Object.values(paths)) {
    if (!isObject(item)) continue
    for (const operation of Object.values(item)) {
      if (!isObject(operation)) continue
      if (Array.isArray(operation.parameters)) {
        for (const parameter of operation.parameters) if (isObject(parameter) && parameter.schema !== undefined) parameter.schema = factory.factor(parameter.schema)
      }
      if (isObject(operation.requestBody)) mediaMap(operation.requestBody.content)
      if (!isObject(operation.responses)) continue
      for (const response of Object.values(operation.responses)) {
        if (!isObject(response)) continue
        mediaMap(response.content)
        if (isObject(response.headers)) {
          for (const [name, header] of Object.entries(response.headers)) {
            if (!isObject(header)) continue
            if (header.schema !== undefined) header.schema = factory.factor(header.schema)
            response.headers[name] = headers.named(name, header)
          }
        }
      }
    }
  }
  const components = isObject(doc.components) ? doc.components : {}
  return {
    ...doc,
    components: {
      ...components,
      schemas: { ...(isObject(components.schemas) ? components.schemas : {}), ...factory.sorted() },
      ...(Object.keys(headers.components).length > 0 && { headers: headers.sorted() })
    }
  }
}
