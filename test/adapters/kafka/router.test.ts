import { readFile } from 'node:fs'
import { expect, it } from 'vitest'
import { afterTimers } from '../../../src/adapters/kafka/router.js'

/** busyFor holds the event loop for `ms`, as kafkajs decoding a large fetch does. */
function busyFor(ms: number): void {
  const untilMs = performance.now() + ms
  while (performance.now() < untilMs) {
    // spin
  }
}

it('afterTimers lets the timers that fell due run first, called from I/O where one setImmediate would not (issue 14)', async () => {
  const order: string[] = []
  await new Promise<void>((done) => {
    // An I/O callback, as a fetch response is: its setImmediate runs before the next timers phase.
    readFile(import.meta.filename, () => {
      setTimeout(() => order.push('timer'), 0)
      busyFor(5)
      setImmediate(() => order.push('one setImmediate'))
      void afterTimers().then(() => {
        order.push('afterTimers')
        done()
      })
    })
  })
  expect(order).toEqual(['one setImmediate', 'timer', 'afterTimers'])
})
