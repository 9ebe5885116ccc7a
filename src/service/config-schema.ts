import { z } from 'zod'
import { configSchema } from './config.js'

/** configSchemaJson is the JSON Schema of the config files, as published in config/schema.json. */
export function configSchemaJson(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }),
    title: 'merchant-throttle worker configuration',
  }
}
