import { ENV_VARIABLES } from './config.js'
import { configSchemaJson } from './config-schema.js'

interface SchemaNode {
  type?: string | string[]
  properties?: Record<string, SchemaNode>
  additionalProperties?: SchemaNode | boolean
  items?: SchemaNode
  anyOf?: SchemaNode[]
  oneOf?: SchemaNode[]
  enum?: unknown[]
  const?: unknown
  default?: unknown
  description?: string
  minimum?: number
  maximum?: number
}

/**
 * configReference is the Configuration table of the README: one row per field of the
 * config schema, with its type, default, environment variable and description. README.md
 * holds it between `<!-- config-reference -->` markers; a test keeps it current.
 */
export function configReference(): string {
  const rows: string[] = [
    '| field | type | default | variable | meaning |',
    '| --- | --- | --- | --- | --- |',
  ]
  const envOf = new Map(ENV_VARIABLES.map((variable) => [variable.path.join('.'), variable.name]))
  const walk = (node: SchemaNode, path: string[]) => {
    if (path.length === 1 && path[0] === 'sources' && node.items !== undefined) {
      for (const kind of node.items.oneOf ?? node.items.anyOf ?? []) {
        const kindName = String(kind.properties?.kind?.const)
        const addRow = (label: string, child: SchemaNode) =>
          rows.push(
            `| \`${label}\` (${kindName}) | ${typeOf(child)} | ${defaultOf(child)} |  | ${child.description ?? ''} |`,
          )
        for (const [name, child] of Object.entries(kind.properties ?? {})) {
          addRow(`sources[].${name}`, child)
          // An object field (a Kafka source's parking) gets a row per field of its own.
          for (const [inner, grandchild] of Object.entries(child.properties ?? {})) {
            addRow(`sources[].${name}.${inner}`, grandchild)
          }
        }
      }
      return
    }
    if (node.properties !== undefined && path.length < 3) {
      for (const [name, child] of Object.entries(node.properties)) {
        if (name === '$schema') continue
        walk(child, [...path, name])
      }
      return
    }
    const field = path.join('.')
    const env = envOf.get(field)
    rows.push(
      `| \`${field}\` | ${typeOf(node)} | ${defaultOf(node)} | ${env === undefined ? '' : `\`${env}\``} | ${node.description ?? ''} |`,
    )
  }
  walk(configSchemaJson() as SchemaNode, [])
  return rows.join('\n')
}

function typeOf(node: SchemaNode): string {
  if (node.enum !== undefined) return node.enum.map((value) => `\`${String(value)}\``).join(' \\| ')
  const alternatives = node.anyOf ?? node.oneOf
  if (alternatives !== undefined) return alternatives.map(typeOf).join(' \\| ')
  if (node.const !== undefined) return `\`${String(node.const)}\``
  if (node.type === 'array') return `list of ${node.items === undefined ? 'values' : typeOf(node.items)}`
  if (node.type === 'object') {
    return typeof node.additionalProperties === 'object'
      ? `map of ${typeOf(node.additionalProperties)}`
      : 'object'
  }
  return Array.isArray(node.type) ? node.type.join(' \\| ') : (node.type ?? 'any')
}

function defaultOf(node: SchemaNode): string {
  if (node.default === undefined) return ''
  const text = JSON.stringify(node.default)
  return text.length > 60 ? '(see config/default.json)' : `\`${text.replaceAll('|', '\\|')}\``
}
