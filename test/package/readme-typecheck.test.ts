import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { afterAll, describe, expect, it } from 'vitest'
import { type ReadmeBlock, readmeTsBlocks, repoRoot } from './readme-support.js'

// Issue 16: the README's BullMQ example did not compile under strict TypeScript (undefined
// placeholders, `job.data` unknown). Every ```ts block of README.md is type-checked here, as a
// module of its own, under the repository's strict options; 'merchant-throttle' and
// 'merchant-throttle/limiter' resolve to src/ through a paths mapping, the way a user's import
// resolves to the published declarations built from it.
mkdirSync(join(repoRoot, '.cache'), { recursive: true })
const dir = mkdtempSync(join(repoRoot, '.cache', 'readme-typecheck-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function typeErrors(blocks: readonly ReadmeBlock[]): string[] {
  const files = blocks.map((block) => {
    const file = join(dir, `readme-line-${block.line}.ts`)
    writeFileSync(file, block.code)
    return file
  })
  const config = ts.getParsedCommandLineOfConfigFile(
    join(repoRoot, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'))
      },
    },
  )!
  const options: ts.CompilerOptions = {
    ...config.options,
    noEmit: true,
    paths: {
      'merchant-throttle': [join(repoRoot, 'src/index.ts')],
      'merchant-throttle/limiter': [join(repoRoot, 'src/limiter/index.ts')],
    },
  }
  const program = ts.createProgram(files, options)
  return ts
    .getPreEmitDiagnostics(program)
    .filter((diagnostic) => diagnostic.file !== undefined && files.includes(diagnostic.file.fileName))
    .map((diagnostic) => {
      const { line } = diagnostic.file!.getLineAndCharacterOfPosition(diagnostic.start ?? 0)
      const block = blocks[files.indexOf(diagnostic.file!.fileName)]!
      return `README.md:${block.line + line}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`
    })
}

describe('README.md', () => {
  const blocks = readmeTsBlocks()

  it('has the quick starts: a BullMQ worker, a Kafka consumer with the control topic, the limiter alone', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(3)
    expect(blocks[0]!.code).toContain('createThrottledWorker')
    expect(blocks[1]!.code).toContain('createThrottledConsumer')
    expect(blocks[1]!.code).toContain('createKafkaControlSource')
    expect(blocks.some((block) => block.code.includes("from 'merchant-throttle/limiter'"))).toBe(true)
  })

  // One program (checking src/ takes seconds): the README's blocks, and a broken block beside
  // them that shows the check reports what does not compile.
  it('type-checks every ts block under strict TypeScript against the package types', () => {
    const broken = {
      line: 0,
      code: "import { KeyedLimiter } from 'merchant-throttle'\nnew KeyedLimiter({ rate: '5/s' }).nope()",
    }
    expect(typeErrors([...blocks, broken])).toEqual([
      expect.stringMatching(/^README.md:1: Property 'nope' does not exist/),
    ])
  }, 120_000)

  it('names no DESIGN.md, which is not in the repository', () => {
    expect(readFileSync(join(repoRoot, 'README.md'), 'utf8')).not.toContain('DESIGN.md')
  })

  it('keeps the two set-up commands first, and the library section within the first screen', () => {
    const lines = readFileSync(join(repoRoot, 'README.md'), 'utf8').split('\n')
    expect(lines.slice(2, 6)).toEqual([
      '```sh',
      expect.stringMatching(/^npm ci && npm start /),
      expect.stringMatching(/^npm ci && npm test /),
      '```',
    ])
    expect(lines.indexOf('## Use it as a library')).toBeLessThan(25)
  })
})
