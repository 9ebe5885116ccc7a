// Writes config/schema.json from the zod schema in src/service/config.ts, and the
// configuration table in README.md from it. `npm run config:schema`;
// test/service/config.test.ts fails when either is stale.
import { readFileSync, writeFileSync } from 'node:fs'
import { configReference } from '../src/service/config-docs.js'
import { configSchemaJson } from '../src/service/config-schema.js'

writeFileSync(
  new URL('../config/schema.json', import.meta.url),
  `${JSON.stringify(configSchemaJson(), null, 2)}\n`,
)

const readmeUrl = new URL('../README.md', import.meta.url)
const readme = readFileSync(readmeUrl, 'utf8')
const start = '<!-- config-reference -->'
const end = '<!-- /config-reference -->'
const from = readme.indexOf(start)
const to = readme.indexOf(end)
if (from < 0 || to < from)
  throw new Error(`README.md: expected ${start} … ${end} markers around the configuration table`)
writeFileSync(readmeUrl, `${readme.slice(0, from + start.length)}\n${configReference()}\n${readme.slice(to)}`)
