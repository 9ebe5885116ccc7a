// Writes config/schema.json from the zod schema in src/service/config.ts.
// `npm run config:schema`; test/service/config.test.ts fails when the file is stale.
import { writeFileSync } from 'node:fs'
import { configSchemaJson } from '../src/service/config-schema.js'

writeFileSync(
  new URL('../config/schema.json', import.meta.url),
  `${JSON.stringify(configSchemaJson(), null, 2)}\n`,
)
