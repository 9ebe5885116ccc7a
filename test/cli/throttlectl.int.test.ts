import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { ensureControlTopic, publishControlChange } from '../../src/control/topic.js'
import { parseRate } from '../../src/limiter/index.js'
import {
  type ControlFixture,
  closeFixture,
  openFixture,
  overridesOf,
  startSource,
} from '../control/support.js'
import { kafkaBrokers, uniqueName } from '../support/services.js'

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const children = new Set<ChildProcess>()
let fixture: ControlFixture
let dir: string

interface CliRun {
  code: number | null
  stdout: string
  stderr: string
}

/** cli runs the real throttlectl, as an operator would, against the test broker. */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/throttlectl.ts', ...args], {
      cwd: repoRoot,
      env: { ...process.env, KAFKA_BROKERS: kafkaBrokers().join(','), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.on('error', reject)
    child.on('close', (code) => {
      children.delete(child)
      resolve({ code, stdout, stderr })
    })
  })
}

async function newTopic(): Promise<string> {
  const topic = uniqueName('control-cli')
  await ensureControlTopic(fixture.admin, { topic })
  fixture.topics.push(topic)
  return topic
}

async function highWaterMark(topic: string): Promise<string> {
  const [partition] = await fixture.admin.fetchTopicOffsets(topic)
  return partition!.high
}

beforeAll(async () => {
  fixture = await openFixture(kafkaBrokers(), uniqueName('control-cli-test'))
  dir = await mkdtemp(join(tmpdir(), 'mt-throttlectl-'))
})

afterEach(async () => {
  await Promise.all(fixture.sources.map((source) => source.stop()))
  fixture.sources.length = 0
})

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  await closeFixture(fixture)
  await rm(dir, { recursive: true, force: true })
})

describe('throttlectl against a real broker', () => {
  it('a missing topic fails with exit code 1 and how to create it; create-topic creates it compacted', async () => {
    const topic = uniqueName('control-cli')
    fixture.topics.push(topic)
    const missing = await cli(['set', 'm1', '5/s', '--topic', topic])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/does not exist; create it with .*throttlectl create-topic/)
    const created = await cli(['create-topic', '--topic', topic])
    expect(created).toMatchObject({ code: 0, stdout: `created ${topic} (compacted, 1 partition(s))\n` })
    const configs = await fixture.admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2, name: topic, configNames: ['cleanup.policy'] }],
    })
    expect(configs.resources[0]?.configEntries).toMatchObject([
      { configName: 'cleanup.policy', configValue: 'compact' },
    ])
  })

  it('publishes a weight with a set, refuses one out of bounds before sending, and get shows it', async () => {
    const topic = await newTopic()
    const running = await startSource(fixture, { topic })
    const set = await cli(['set', 'psp:adyen:m_42', '20/s', '--weight', '2', '--topic', topic])
    expect(set.stderr).toBe('')
    expect(set.stdout).toMatch(/^published set psp:adyen:m_42 20\/s, weight 2 \(version \d+\)/)
    await vi.waitFor(
      () => expect(running.source.table().weights).toMatchObject([{ merchant: 'psp:adyen:m_42', weight: 2 }]),
      {
        timeout: 10_000,
      },
    )
    const before = await highWaterMark(topic)
    const refused = await cli(['set', 'psp:adyen:m_42', '20/s', '--weight', '5000', '--topic', topic])
    expect(refused).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('weight: expected a weight, a number in [0.001, 1000], got 5000'),
    })
    expect(await highWaterMark(topic)).toBe(before)
    const got = await cli(['get', 'psp:adyen:m_42', '--topic', topic])
    expect(got).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^psp:adyen:m_42 {2}20\/s .*, weight 2\n$/),
    })
    const all = await cli(['get', '--json', '--topic', topic])
    expect(JSON.parse(all.stdout).weights).toMatchObject([{ merchant: 'psp:adyen:m_42', weight: 2 }])
  })

  it('a change published with the CLI is applied in each of 3 running instances', async () => {
    const topic = await newTopic()
    const instances = await Promise.all([0, 1, 2].map(() => startSource(fixture, { topic })))
    const everywhere = (expected: Record<string, string>) =>
      vi.waitFor(
        () =>
          expect(instances.map(({ limiter }) => overridesOf(limiter))).toEqual([
            expected,
            expected,
            expected,
          ]),
        {
          timeout: 10_000,
        },
      )

    const set = await cli(['set', 'm_cli', '5000/min', '--topic', topic])
    expect(set.stderr).toBe('')
    expect(set).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^published set m_cli 5000\/min \(version \d+\) to .* \(unsigned\)\n$/),
    })
    await everywhere({ m_cli: '5000/60000' })

    const file = join(dir, 'rates.json')
    await writeFile(
      file,
      JSON.stringify({
        type: 'snapshot',
        version: 1,
        default: '1000/min',
        overrides: { m_a: '10/s', m_b: '20/s' },
      }),
    )
    expect((await cli(['snapshot', file, '--topic', topic])).code).toBe(0)
    await everywhere({ m_a: '10/1000', m_b: '20/1000' })
    expect(instances.map(({ limiter }) => limiter.rates().default.limit)).toEqual([1000, 1000, 1000])

    expect((await cli(['clear', 'm_a', '--topic', topic])).code).toBe(0)
    await everywhere({ m_b: '20/1000' })
    // Every change was newer than the last: none was stale anywhere.
    expect(instances.map(({ source }) => source.stats().stale)).toEqual([0, 0, 0])
  })

  it('get prints the table in force, as a worker has it', async () => {
    const topic = await newTopic()
    expect((await cli(['set', '*', '1000/min', '--inheritance', 'reset', '--topic', topic])).code).toBe(0)
    await publishControlChange(
      fixture.producer,
      { type: 'set', merchant: 'm_get', rate: parseRate('7/s'), version: 1 },
      { topic },
    )
    const { source } = await startSource(fixture, { topic })

    const text = await cli(['get', '--topic', topic])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(
      /^.*: 2 applied, 0 stale, 0 rejected records \(signatures not checked\)\ndefault {2}1000\/min \(version \d+, applied .*\)\nm_get {2}7\/s \(version 1, applied/,
    )

    const json = await cli(['get', '--json', '--topic', topic])
    const body = JSON.parse(json.stdout) as {
      default: { version: number }
      overrides: Array<{ merchant: string; version: number }>
    }
    expect(body.default.version).toBe(source.table().default!.version)
    expect(body.overrides.map(({ merchant, version }) => ({ merchant, version }))).toEqual(
      source.table().overrides.map(({ merchant, version }) => ({ merchant, version })),
    )

    expect((await cli(['get', 'm_other', '--topic', topic])).stdout).toMatch(
      /^m_other {2}no override: the default applies, 1000\/min/,
    )
  })

  it('refuses invalid input with exit code 2, sending nothing', async () => {
    const topic = await newTopic()
    const before = await highWaterMark(topic)
    const file = join(dir, 'bad-rates.json')
    await writeFile(
      file,
      JSON.stringify({ type: 'snapshot', default: '1000/min', overrides: { m1: '0/min' } }),
    )
    // The checks themselves are the parser's (test/control/schema.test.ts); these show the CLI applies them.
    const runs = await Promise.all([
      cli(['set', 'm 1', '5/s', '--topic', topic]),
      cli(['set', 'm1', '2000000/s', '--inheritance', 'reset', '--topic', topic]),
      cli(['snapshot', file, '--topic', topic]),
    ])
    expect(runs.map((run) => run.code)).toEqual([2, 2, 2])
    expect(runs.map((run) => run.stderr.trim())).toEqual([
      'throttlectl: invalid set: merchant: contains characters outside [A-Za-z0-9-_.:@/+=]',
      'throttlectl: invalid set: rate.limit: expected a number > 0 and <= 1000000, got 2000000',
      expect.stringMatching(/^throttlectl: invalid snapshot: overrides\.m1: expected a finite limit above 0/),
    ])
    expect(await highWaterMark(topic)).toBe(before)
  })

  it('signs with MT_CONTROL_SIGNING_KEY: a source that requires signatures applies it, an unsigned change is rejected', async () => {
    const topic = await newTopic()
    const key = { id: 'ops-2', secret: 'the-ops-secret-0123456789' }
    const { source, limiter } = await startSource(fixture, {
      topic,
      signingKeys: [{ id: 'ops-1', secret: 'the-old-secret-0123456789' }, key],
    })
    const signed = await cli(['set', 'm_signed', '3/s', '--topic', topic], {
      MT_CONTROL_SIGNING_KEY: key.secret,
      MT_CONTROL_SIGNING_KEY_ID: key.id,
    })
    expect(signed).toMatchObject({ code: 0, stdout: expect.stringContaining('(signed with key ops-2)') })
    expect((await cli(['set', 'm_unsigned', '3/s', '--topic', topic])).code).toBe(0)
    await vi.waitFor(() => expect(source.stats().rejectedBy).toEqual({ unsigned: 1 }), { timeout: 10_000 })
    expect(overridesOf(limiter)).toEqual({ m_signed: '3/1000' })
  })

  it('watch prints changes as they arrive, until Ctrl-C', async () => {
    const topic = await newTopic()
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/throttlectl.ts', 'watch', '--topic', topic],
      {
        cwd: repoRoot,
        env: { ...process.env, KAFKA_BROKERS: kafkaBrokers().join(',') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
    await vi.waitFor(() => expect(stderr).toContain('watching for changes'), { timeout: 30_000 })
    expect((await cli(['set', 'm_watch', '9/s', '--topic', topic])).code).toBe(0)
    await fixture.producer.send({ topic, messages: [{ key: 'm_watch', value: 'garbage' }] })
    await vi.waitFor(() => expect(stdout.split('\n').filter(Boolean)).toHaveLength(2), { timeout: 10_000 })
    expect(stdout).toMatch(
      /^\S+ applied {2}set m_watch 9\/s \(version \d+\) \[partition 0 offset 0\]\n\S+ rejected invalid-json: message: not JSON/,
    )
    child.kill('SIGINT')
    expect(await exited).toBe(0)
    children.delete(child)
  })
})
