import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

/** BENCHMARKS_MD is the document every benchmark writes its section into. */
export const BENCHMARKS_MD = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))

/**
 * writeSection replaces the section named `name` in docs/benchmarks.md (between its
 * `<!-- bench:name -->` and `<!-- /bench:name -->` markers) with `markdown`, or appends
 * it when the section is new. Each benchmark owns one section, so benchmarks can be
 * rerun one at a time without touching the others' figures.
 */
export async function writeSection(name: string, markdown: string): Promise<void> {
  const start = `<!-- bench:${name} -->`
  const end = `<!-- /bench:${name} -->`
  const block = `${start}\n${markdown.trim()}\n${end}`
  let doc = await readFile(BENCHMARKS_MD, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '# Benchmarks\n'
    throw error
  })
  const from = doc.indexOf(start)
  const to = doc.indexOf(end)
  if (from >= 0 && to > from) {
    doc = doc.slice(0, from) + block + doc.slice(to + end.length)
  } else {
    doc = `${doc.trimEnd()}\n\n${block}\n`
  }
  await writeFile(BENCHMARKS_MD, doc)
}

/** machineLine describes where a benchmark ran, for the header of its section. */
export function machineLine(): string {
  return `Node ${process.version}, ${process.platform}/${process.arch}, measured ${new Date().toISOString().slice(0, 10)}`
}

/** median of a non-empty list of numbers. */
export function median(values: readonly number[]): number {
  return quantile(values, 0.5)
}

/** quantile q (0..1) of a non-empty list, by linear interpolation between order statistics. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new TypeError('quantile: expected a non-empty list, got an empty one')
  const sorted = [...values].sort((a, b) => a - b)
  const at = (sorted.length - 1) * q
  const lo = Math.floor(at)
  const hi = Math.ceil(at)
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo)
}
