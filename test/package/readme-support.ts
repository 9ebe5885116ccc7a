import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** ReadmeBlock is one ```ts block of README.md, with the line its code starts on. */
export interface ReadmeBlock {
  line: number
  code: string
}

/** readmeTsBlocks returns every ```ts block of README.md, in order. */
export function readmeTsBlocks(): ReadmeBlock[] {
  const lines = readFileSync(join(repoRoot, 'README.md'), 'utf8').split('\n')
  const blocks: ReadmeBlock[] = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```ts') continue
    const end = lines.indexOf('```', i + 1)
    if (end < 0) throw new Error(`README.md:${i + 1}: a \`\`\`ts block that never ends`)
    blocks.push({ line: i + 2, code: lines.slice(i + 1, end).join('\n') })
    i = end
  }
  return blocks
}
