import { describe, expect, it } from 'vitest'
import { chooseLogFormat } from '../../src/service/logger.js'

// Issue 16: `log.pretty: auto` in a terminal loaded pino-pretty, a devDependency, so an
// installed worker (or `docker run -it`) crashed at start-up. Pretty only when it is there.
const installed = '/x/node_modules/pino-pretty/index.js'

describe('chooseLogFormat', () => {
  it.each([
    // pretty, isTTY, NODE_ENV, pino-pretty installed → pretty?
    ['auto', true, undefined, installed, installed], // a terminal in development
    ['auto', true, undefined, undefined, undefined], // the same without pino-pretty: JSON, no crash
    ['auto', false, undefined, installed, undefined], // not a terminal
    ['auto', true, 'production', installed, undefined], // production always writes JSON under auto
    ['always', false, 'production', installed, installed],
    ['never', true, undefined, installed, undefined],
  ] as const)(
    'pretty=%s tty=%s NODE_ENV=%s pino-pretty=%s → %s',
    (pretty, isTTY, nodeEnv, prettyPath, expected) => {
      expect(chooseLogFormat(pretty, { isTTY, nodeEnv, prettyPath }).prettyPath).toBe(expected)
    },
  )

  it("says why 'always' writes JSON when pino-pretty is missing", () => {
    const format = chooseLogFormat('always', { isTTY: true, nodeEnv: undefined, prettyPath: undefined })
    expect(format).toEqual({
      prettyPath: undefined,
      warning: expect.stringContaining('pino-pretty is not installed'),
    })
  })
})
