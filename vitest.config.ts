import { defineConfig } from 'vitest/config'

// Two projects: `unit` needs nothing but Node; `integration` (files named *.int.test.ts)
// talks to a real Kafka broker and a real Redis, resolved once by test/setup/services.ts.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.int.test.ts', 'node_modules/**'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.int.test.ts'],
          globalSetup: ['test/setup/services.ts'],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          // Two cores: integration files share one broker and one Redis; running them
          // one at a time keeps timing-sensitive assertions honest on a loaded machine.
          fileParallelism: false,
        },
      },
    ],
  },
})
