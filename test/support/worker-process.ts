import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

const MAIN = fileURLToPath(new URL('../../src/service/main.ts', import.meta.url))

/** WorkerProcess is the worker started as operators run it, with its output collected. */
export interface WorkerProcess {
  child: ChildProcess
  /** output is everything written to stdout and stderr so far. */
  output(): string
  /** exited resolves with the exit code once the process ends. */
  exited(): Promise<number | null>
}

/**
 * startWorkerProcess runs src/service/main.ts with `--config configFile` in a child
 * process (through tsx), with JSON logs and `env` over this process's environment.
 */
export function startWorkerProcess(configFile: string, env: Record<string, string> = {}): WorkerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', configFile], {
    env: { ...process.env, MT_LOG_PRETTY: 'never', NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const collect = (chunk: Buffer) => {
    output += chunk.toString()
  }
  child.stdout!.on('data', collect)
  child.stderr!.on('data', collect)
  const exit = once(child, 'exit').then(([code]) => code as number | null)
  return { child, output: () => output, exited: () => exit }
}
