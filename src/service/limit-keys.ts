import { MerchantThrottleError } from '../errors.js'
import { checkMerchantKey, MAX_MERCHANT_KEY_LENGTH } from '../limiter/index.js'

/**
 * MAX_KEY_TEMPLATES is the most templates a source may list: the limiter takes one to four
 * keys per job, outermost first.
 */
export const MAX_KEY_TEMPLATES = 4

/** MERCHANT_FIELD is the placeholder that stands for the job's merchant key, not a field of its data. */
export const MERCHANT_FIELD = 'merchant'

/**
 * LimitKeysFunction gives a job's limit keys, outermost first, from its merchant key and its
 * data (BullMQ: `job.data`; Kafka: the decoded message value): what the adapters take as
 * their `limitKeys` option.
 */
export type LimitKeysFunction = (merchantKey: string, data: unknown) => string | readonly string[]

/**
 * LimitKeyError: a job's data cannot fill one of its source's key templates (a field is
 * missing or not a string or finite number), or the key it fills is not a valid key. The
 * adapters handle it as a bad merchant key: the job fails (BullMQ) or is dead-lettered
 * (Kafka) with this message, which names the template and the field.
 */
export class LimitKeyError extends MerchantThrottleError {
  readonly template: string
  readonly field: string | undefined
  constructor(template: string, field: string | undefined, problem: string) {
    const where = field === undefined ? '' : ` field '${field}'`
    super('INVALID_LIMIT_KEY', `key template '${template}'${where}: ${problem}`)
    this.template = template
    this.field = field
  }
}

/** TemplatePart is one piece of a compiled template: literal text, or the path of a field. */
type TemplatePart = string | { readonly field: string; readonly path: readonly string[] }

interface CompiledTemplate {
  readonly text: string
  readonly parts: readonly TemplatePart[]
}

// A literal piece holds only characters a key may hold; a field path is dot-separated names.
const LITERAL = /^[A-Za-z0-9\-_.:@/+=]*$/
const FIELD_PATH = /^[A-Za-z_$][A-Za-z0-9_$-]*(\.[A-Za-z0-9_$-]+)*$/

/**
 * checkKeyTemplates returns what is wrong with a source's `keys`, one line per problem
 * (empty when nothing is): each template is non-empty, its literal text made of key
 * characters (`[A-Za-z0-9-_.:@/+=]`), its placeholders `{merchant}`, `{field}` or
 * `{a.b}`, braces balanced, its text plus one character a placeholder within `maxKeyLength`;
 * one to MAX_KEY_TEMPLATES templates, no two the same.
 */
export function checkKeyTemplates(
  templates: readonly unknown[],
  maxKeyLength = MAX_MERCHANT_KEY_LENGTH,
): string[] {
  const problems: string[] = []
  if (templates.length === 0 || templates.length > MAX_KEY_TEMPLATES) {
    problems.push(`expected 1 to ${MAX_KEY_TEMPLATES} templates, got ${templates.length}`)
  }
  const seen = new Set<string>()
  for (const template of templates) {
    if (typeof template !== 'string') {
      problems.push(`expected a template string, got ${typeof template}`)
      continue
    }
    if (seen.has(template)) problems.push(`template '${template}' is listed twice`)
    seen.add(template)
    const parsed = parseTemplate(template)
    if (typeof parsed === 'string') problems.push(`template '${template}': ${parsed}`)
    else {
      const literal = parsed.reduce((sum, part) => sum + (typeof part === 'string' ? part.length : 1), 0)
      if (literal > maxKeyLength) {
        problems.push(`template '${template}': its keys would be longer than ${maxKeyLength} characters`)
      }
    }
  }
  return problems
}

/**
 * compileKeyTemplates turns a source's `keys` into the LimitKeysFunction the adapters
 * take, parsed once. Each call fills every template from the merchant key (`{merchant}`)
 * and the job's data (`{field}`, `{a.b}`: own fields of objects, a string or a finite
 * number) and checks each key as a merchant key of at most `maxKeyLength` characters;
 * one template gives a single key, several a list outermost first. Throws a TypeError
 * for templates checkKeyTemplates refuses; the function throws LimitKeyError.
 */
export function compileKeyTemplates(
  templates: readonly string[],
  maxKeyLength = MAX_MERCHANT_KEY_LENGTH,
): LimitKeysFunction {
  const problems = checkKeyTemplates(templates, maxKeyLength)
  if (problems.length > 0) throw new TypeError(`compileKeyTemplates: ${problems.join('; ')}`)
  const compiled = templates.map(
    (text): CompiledTemplate => ({ text, parts: parseTemplate(text) as TemplatePart[] }),
  )
  if (compiled.length === 1) {
    const only = compiled[0]!
    return (merchantKey, data) => fill(only, merchantKey, data, maxKeyLength)
  }
  return (merchantKey, data) => {
    const keys = compiled.map((template) => fill(template, merchantKey, data, maxKeyLength))
    for (let i = 1; i < keys.length; i++) {
      const earlier = keys.indexOf(keys[i]!)
      if (earlier < i) {
        throw new LimitKeyError(
          compiled[i]!.text,
          undefined,
          `gives '${keys[i]}', the same key as template '${compiled[earlier]!.text}'`,
        )
      }
    }
    return keys
  }
}

/** parseTemplate splits a template into literal text and field paths, or returns what is wrong. */
function parseTemplate(template: string): TemplatePart[] | string {
  if (template.length === 0) return 'empty'
  const parts: TemplatePart[] = []
  let at = 0
  while (at < template.length) {
    const open = template.indexOf('{', at)
    const literal = template.slice(at, open < 0 ? undefined : open)
    if (literal.includes('}')) return "'}' without '{'"
    if (!LITERAL.test(literal)) {
      return `text '${literal}' has characters outside [A-Za-z0-9-_.:@/+=]`
    }
    if (literal !== '') parts.push(literal)
    if (open < 0) break
    const close = template.indexOf('}', open)
    if (close < 0) return "'{' without '}'"
    const field = template.slice(open + 1, close)
    if (field.includes('{')) return "'{' inside a placeholder"
    if (!FIELD_PATH.test(field)) {
      return `placeholder '{${field}}': expected {merchant}, {field} or {a.b} (letters, digits, _ $ -)`
    }
    parts.push({ field, path: field.split('.') })
    at = close + 1
  }
  return parts
}

/** fill builds one key from a compiled template, or throws LimitKeyError naming template and field. */
function fill(template: CompiledTemplate, merchantKey: string, data: unknown, maxKeyLength: number): string {
  let key = ''
  for (const part of template.parts) {
    if (typeof part === 'string') {
      key += part
      continue
    }
    const value = part.field === MERCHANT_FIELD ? merchantKey : valueAt(data, part.path)
    const text = fieldText(value, maxKeyLength - key.length, maxKeyLength)
    if (typeof text !== 'string') throw new LimitKeyError(template.text, part.field, text.problem)
    key += text
  }
  const checked = checkMerchantKey(key, maxKeyLength)
  if (!checked.ok)
    throw new LimitKeyError(template.text, undefined, `the key it gives is refused: ${checked.reason}`)
  return key
}

/** fieldText is a field's value as key text, or why it cannot be one. */
function fieldText(value: unknown, room: number, maxKeyLength: number): string | { problem: string } {
  if (value === undefined) return { problem: 'missing from the job data' }
  let text: string
  if (typeof value === 'string') text = value
  else if (typeof value === 'number' && Number.isFinite(value)) text = String(value)
  else return { problem: `expected a string or a finite number, got ${describeValue(value)}` }
  if (text.length === 0) return { problem: 'empty' }
  // checked before anything else reads it: a megabyte value never becomes a megabyte key
  if (text.length > room) {
    return { problem: `the key would be longer than ${maxKeyLength} characters (a value of ${text.length})` }
  }
  if (!LITERAL.test(text)) {
    return { problem: `value ${shorten(text)} has characters outside [A-Za-z0-9-_.:@/+=]` }
  }
  return text
}

/** valueAt reads an own field along `path`, or undefined when any step is not there. */
function valueAt(data: unknown, path: readonly string[]): unknown {
  let node = data
  for (const segment of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, segment)) return undefined
    node = (node as Record<string, unknown>)[segment]
  }
  return node
}

function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'number') return String(value)
  return typeof value === 'object' ? 'an object' : typeof value
}

/** shorten keeps a refused key readable in an error: a value may be megabytes long. */
function shorten(key: string): string {
  return JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key)
}
