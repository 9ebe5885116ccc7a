import { describe, expect, it } from 'vitest'
import { FakeClock } from '../../src/limiter/clock.js'
import { KeyedLimiter } from '../../src/limiter/limiter.js'
import { MAX_PARENT_LABELS, ServiceMetrics } from '../../src/service/metrics.js'

describe('ServiceMetrics', () => {
  it('labels only the configured merchants; every other one is "other"', async () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    const metrics = new ServiceMetrics(limiter, ['vip'])
    for (let i = 0; i < 1_000; i++) metrics.decision('bullmq:webhooks', 'granted', `m${i}`)
    metrics.decision('bullmq:webhooks', 'delayed', 'vip', 250)
    const text = await metrics.registry.metrics()
    expect(text).toContain(
      'mt_decisions_total{source="bullmq:webhooks",outcome="granted",merchant="other"} 1000',
    )
    expect(text).toContain('mt_decisions_total{source="bullmq:webhooks",outcome="delayed",merchant="vip"} 1')
    expect(text).toContain('mt_delay_seconds_bucket{le="0.5",source="bullmq:webhooks"} 1')
    expect(text).not.toContain('merchant="m1"')
  })

  it('exports the limiter counters, clock skew and the rates in force', async () => {
    const clock = new FakeClock(10_000)
    const limiter = new KeyedLimiter({ rate: '600/min', clock })
    limiter.setRate('vip', '60/s')
    limiter.tryAcquire('a')
    clock.set(9_950)
    limiter.tryAcquire('a')
    clock.set(5_000)
    limiter.tryAcquire('a')
    clock.set(10_000) // the clock corrected forward after the rebase: no time counted for it
    limiter.tryAcquire('a')
    const metrics = new ServiceMetrics(limiter, ['vip'])
    metrics.controlMessage('rejected', 'invalid-json')
    const text = await metrics.registry.metrics()
    expect(text).toContain('mt_keys_held 1')
    expect(text).toContain('mt_clock_skew_tolerated_total 1')
    expect(text).toContain('mt_clock_skew_rebased_total 1')
    expect(text).toContain('mt_clock_skew_corrected_total 1')
    expect(text).toContain('mt_penalties_dropped_total 0')
    expect(text).toContain('mt_rate_limit_per_second{merchant="*"} 10')
    expect(text).toContain('mt_rate_limit_per_second{merchant="vip"} 60')
    expect(text).toContain('mt_control_messages_total{result="rejected",reason="invalid-json"} 1')
  })

  it('counts penalties dropped for keys the table could not hold', async () => {
    const limiter = new KeyedLimiter({ rate: '1/s', maxKeys: 1, clock: new FakeClock(0) })
    limiter.tryAcquire('held') // holds the only slot, its bucket not full: it cannot be evicted
    limiter.penalize('other', 30_000)
    const text = await new ServiceMetrics(limiter, []).registry.metrics()
    expect(text).toContain('mt_penalties_dropped_total 1')
  })

  it("exports each source's standing backlog: parked, buffered and bytes as gauges, moves and late grants as counters", async () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    const metrics = new ServiceMetrics(limiter, [])
    let parked = 1_200
    metrics.addBacklogReader('bullmq:webhooks', () => ({
      parked,
      buffered: 7,
      bufferedBytes: 0,
      parkedMerchants: 1,
      parkTransactions: 0,
      parkFailures: 0,
      lateGrants: 3,
    }))
    metrics.addBacklogReader('kafka:jobs', () => ({
      parked: 9_900,
      buffered: 100,
      bufferedBytes: 51_200,
      parkedMerchants: 2,
      parkTransactions: 20,
      parkFailures: 1,
      lateGrants: 0,
    }))
    const text = await metrics.registry.metrics()
    for (const line of [
      'mt_parked{source="bullmq:webhooks"} 1200',
      'mt_parked{source="kafka:jobs"} 9900',
      'mt_buffered{source="bullmq:webhooks"} 7',
      'mt_buffered_bytes{source="kafka:jobs"} 51200',
      'mt_parked_merchants{source="kafka:jobs"} 2',
      'mt_park_transactions_total{source="kafka:jobs"} 20',
      'mt_park_failures_total{source="kafka:jobs"} 1',
      'mt_late_grants_total{source="bullmq:webhooks"} 3',
    ]) {
      expect(text).toContain(line)
    }
    parked = 0
    expect(await metrics.registry.metrics()).toContain('mt_parked{source="bullmq:webhooks"} 0')
  })

  it('counts the BullMQ backlog outcomes in the decisions counter', async () => {
    const limiter = new KeyedLimiter({ rate: '10/s', clock: new FakeClock(0) })
    const metrics = new ServiceMetrics(limiter, [])
    for (const outcome of ['backlogged', 'promoted', 'late'])
      metrics.decision('bullmq:webhooks', outcome, 'm')
    const text = await metrics.registry.metrics()
    for (const outcome of ['backlogged', 'promoted', 'late']) {
      expect(text).toContain(
        `mt_decisions_total{source="bullmq:webhooks",outcome="${outcome}",merchant="other"} 1`,
      )
    }
  })

  it('reads queue depth at scrape time', async () => {
    const metrics = new ServiceMetrics(new KeyedLimiter({ rate: '1/s' }), [])
    metrics.addDepthReader(async () => [{ source: 'bullmq:webhooks', state: 'delayed', value: 7 }])
    expect(await metrics.registry.metrics()).toContain(
      'mt_backlog{source="bullmq:webhooks",state="delayed"} 7',
    )
  })

  it('gives a control message a reason label only when it was rejected: no empty reason=""', async () => {
    const metrics = new ServiceMetrics(new KeyedLimiter({ rate: '1/s' }), [])
    metrics.controlMessage('applied')
    metrics.controlMessage('rejected', 'unsigned')
    const text = await metrics.registry.metrics()
    expect(text).toContain('mt_control_messages_total{result="applied"} 1')
    expect(text).toContain('mt_control_messages_total{result="rejected",reason="unsigned"} 1')
    expect(text).not.toContain('=""')
  })

  it("serves the process's metrics beside its own: CPU, memory, event loop lag", async () => {
    const text = await new ServiceMetrics(new KeyedLimiter({ rate: '1/s' }), []).registry.metrics()
    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m)
    expect(text).toMatch(/^process_resident_memory_bytes \d/m)
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds \d/m)
  })

  it('exports parents with their children: own rate, children by state, grants and weights of labelled children, the rest as other', async () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '100/s', clock })
    limiter.setRate('psp:acme', '2/s burst 1')
    limiter.setWeight('psp:acme:vip', 3)
    for (const merchant of ['vip', 'm1', 'm2'])
      for (let i = 0; i < 3; i++) limiter.reserve(['psp:acme', `psp:acme:${merchant}`])
    const metrics = new ServiceMetrics(limiter, ['psp:acme:vip'])
    metrics.watchLayers({ limiter, bindings: () => ({ parent: 2, 'parent-share': 1 }) })
    const text = await metrics.registry.metrics()
    expect(text).toContain('mt_parents 1')
    expect(text).toContain('mt_parent_rate_limit_per_second{parent="psp:acme"} 2')
    expect(text).toContain('mt_parent_children{parent="psp:acme",state="backlogged"} 3')
    expect(text).toContain('mt_parent_children{parent="psp:acme",state="idle"} 0')
    expect(text).toContain('mt_child_weight{parent="psp:acme",child="psp:acme:vip"} 3')
    expect(text).toMatch(/mt_child_granted_per_second\{parent="psp:acme",child="psp:acme:vip"\} \d/)
    expect(text).toMatch(/mt_child_granted_per_second\{parent="psp:acme",child="other"\} \d/)
    expect(text).not.toContain('child="psp:acme:m1"')
    expect(text).toContain('mt_waiting_merchants{binds="parent"} 2')
    expect(text).toContain('mt_waiting_merchants{binds="parent-share"} 1')
    expect(text).toContain('mt_waiting_merchants{binds="own"} 0')
  })

  it('leaves out a parent without a rate of its own, and labels at most MAX_PARENT_LABELS parents', async () => {
    const clock = new FakeClock(0)
    const limiter = new KeyedLimiter({ rate: '1/s', clock })
    const parents = MAX_PARENT_LABELS + 20
    for (let p = 0; p < parents; p++) {
      limiter.setRate(`psp:p${p}`, '1/s')
      for (let i = 0; i < 3; i++) limiter.reserve([`psp:p${p}`, `psp:p${p}:m`])
    }
    // p0's children were held by it, but it has no rate of its own any more
    limiter.setRate('psp:p0', null)
    const metrics = new ServiceMetrics(limiter, [])
    metrics.watchLayers({ limiter, bindings: () => ({}) })
    const text = await metrics.registry.metrics()
    expect(text).toContain(`mt_parents ${parents}`)
    const series = text.split('\n').filter((line) => line.startsWith('mt_parent_children{'))
    expect(series).toHaveLength(MAX_PARENT_LABELS * 2)
    expect(text).not.toContain('mt_parent_rate_limit_per_second{parent="psp:p0"}')
    expect(text).toContain('mt_parent_rate_limit_per_second{parent="psp:p1"} 1')
  })
})
