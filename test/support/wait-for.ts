/**
 * waitFor polls `condition` every `pollMs` (50) until it holds, or fails after `timeoutMs`
 * saying `what`. The condition may be async (a Redis count, an HTTP read). Tests that time
 * what they wait for poll faster (20 ms).
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  pollMs = 50,
): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
}
