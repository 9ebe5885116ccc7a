// The status page's client: reads /status.json every second and draws it.
// Plain browser JavaScript, served as is (no build step). Every text that comes from outside
// (merchant keys, control errors) reaches the page through textContent, never as HTML.
;(() => {
  /** POLL_MS is the pause between the end of one /status.json read and the next. */
  const POLL_MS = 1_000
  /** CHART_COUNT is how many of the busiest merchants get a chart. */
  const CHART_COUNT = 6
  /** WINDOW_S is the charts' span; the server keeps 60 one-second buckets per merchant. */
  const WINDOW_S = 60
  /** SMOOTH_S averages the delivered rate over this many seconds, as BullMQ starts due jobs in clumps. */
  const SMOOTH_S = 3
  const TOKEN_KEY = 'merchant-throttle.status-token'

  const token = takeToken()
  /** limitSeen holds, per merchant, the limit in force at each read since the page opened. */
  const limitSeen = new Map()
  /** HIGHLIGHT_MS is how long a rate that just changed stays highlighted. */
  const HIGHLIGHT_MS = 3_000
  /** rateShown holds, per merchant, the rate last drawn and when it last changed (page clock). */
  const rateShown = new Map()
  const charts = new Map()
  const byId = (id) => document.getElementById(id)

  /**
   * takeToken keeps a token given once as ?token=… for this tab (sessionStorage) and takes it
   * out of the address bar, so it is neither bookmarked nor shown.
   */
  function takeToken() {
    const url = new URL(window.location.href)
    const given = url.searchParams.get('token')
    if (given !== null && given !== '') {
      sessionStorage.setItem(TOKEN_KEY, given)
      url.searchParams.delete('token')
      window.history.replaceState(null, '', `${url.pathname}${url.search}${url.hash}`)
    }
    return sessionStorage.getItem(TOKEN_KEY)
  }

  async function poll() {
    try {
      const headers = token === null ? {} : { authorization: `Bearer ${token}` }
      const response = await fetch('/status.json', { headers, cache: 'no-store' })
      if (response.status === 401) {
        if (token !== null) sessionStorage.removeItem(TOKEN_KEY)
        showNotice(
          token === null
            ? 'This worker requires a token: open this page as /?token=<http.authToken>. The page keeps it for this tab only.'
            : 'The worker refused the token: open this page again as /?token=<http.authToken>.',
        )
        setPill(byId('ready'), 'token needed', 'pill-bad')
        return
      }
      if (!response.ok) {
        showNotice(`/status.json answered ${response.status}; trying again every second.`)
      } else {
        render(await response.json())
        showNotice(null)
      }
    } catch (error) {
      showNotice(`The worker does not answer (${error.message}); trying again every second.`)
      setPill(byId('ready'), 'unreachable', 'pill-bad')
    }
    window.setTimeout(poll, POLL_MS)
  }

  function render(status) {
    const nowMs = Date.parse(status.generatedAt)
    const merchants = status.merchants
    renderHeader(status, nowMs)
    renderCards(status, merchants)
    rememberLimits(merchants, nowMs)
    // A worker up for less than a minute has counted for less than a minute.
    const windowS = Math.max(10, Math.min(WINDOW_S - 1, status.uptimeS))
    renderCharts(merchants.filter((m) => m.deliveredLastMinute > 0).slice(0, CHART_COUNT), nowMs, windowS)
    renderMerchants(merchants, nowMs, Math.min(WINDOW_S, Math.max(1, status.uptimeS)))
    // Older workers serve no parents.
    renderParents(status.parents ?? [])
    renderEvents(byId('changes'), byId('changes-empty'), status.control.recentChanges, (item, li) => {
      li.append(el('span', 'what', item.description))
    })
    renderEvents(
      byId('rejections'),
      byId('rejections-empty'),
      status.control.recentRejections,
      (item, li) => {
        const what = el('span', 'what')
        what.append(el('span', 'pill pill-bad reason', item.reason), document.createTextNode(item.error))
        li.append(what)
      },
    )
  }

  function renderHeader(status, nowMs) {
    const { ready, checks } = status.readiness
    const failing = Object.keys(checks).filter((name) => !checks[name])
    if (ready) setPill(byId('ready'), 'ready', 'pill-ok')
    else setPill(byId('ready'), `not ready: ${failing.join(', ')}`, 'pill-warn')
    byId('updated').textContent = `updated ${clockTime(nowMs)} · up ${duration(status.uptimeS)}`
  }

  function renderCards(status, merchants) {
    const { limiter, control, sources } = status
    byId('default-rate').textContent = limiter.defaultRate
    byId('sources').textContent =
      sources.length === 0 ? 'no sources' : sources.map((s) => `${s.kind}:${s.name}`).join(', ')
    // Older workers serve sources without a backlog.
    const parked = sources.reduce((sum, s) => sum + (s.backlog?.parked ?? 0), 0)
    byId('keys').textContent = count(limiter.keys)
    const full = limiter.tableFull > 0 ? ` · ${count(limiter.tableFull)} deferred, table full` : ''
    byId('keys-note').textContent =
      `of ${count(limiter.maxKeys)} · ${count(limiter.evictions)} evicted${full}`
    const throttled = merchants.filter((m) => m.waiting > 0)
    const waiting = throttled.reduce((sum, m) => sum + m.waiting, 0)
    const slowed = merchants.filter((m) => m.penaltyFactor < 1).length
    byId('throttled').textContent = count(throttled.length)
    const open = status.slow === undefined ? 0 : status.slow.breakersOpen + status.slow.breakersHalfOpen
    const breakers = open > 0 ? ` · ${count(open)} circuit ${open === 1 ? 'breaker' : 'breakers'} open` : ''
    const parkedNote = parked > 0 ? ` · ${count(parked)} parked` : ''
    byId('throttled-note').textContent =
      `${count(waiting)} jobs waiting${parkedNote} · ${slowed} slowed by 429${breakers}`
    byId('control').textContent = `${count(control.applied)} applied`
    const rejected = `${count(control.rejected)} rejected`
    byId('control-note').textContent =
      `${control.source === 'kafka' ? 'Kafka' : 'rates file'} · ${control.caughtUp ? 'caught up' : 'catching up'} · ${count(control.stale)} stale · ${rejected}`
  }

  function rememberLimits(merchants, nowMs) {
    const listed = new Set()
    for (const m of merchants) {
      listed.add(m.merchantKey)
      let seen = limitSeen.get(m.merchantKey)
      if (seen === undefined) {
        seen = { points: [], changedAtMs: null }
        limitSeen.set(m.merchantKey, seen)
      }
      seen.changedAtMs = m.lastChange === null ? null : Date.parse(m.lastChange.atIso)
      seen.points.push({ atMs: nowMs, perSec: m.limitPerSec, penalized: m.penaltyFactor < 1 })
      // Keep what the window needs, and the one point before it that says what held at its start.
      const cutoffMs = nowMs - (WINDOW_S + 2) * 1_000
      while (seen.points.length > 1 && seen.points[1].atMs < cutoffMs) seen.points.shift()
    }
    for (const key of limitSeen.keys()) if (!listed.has(key)) limitSeen.delete(key)
  }

  /**
   * limitAt is the limit in force for `merchantKey` during the second starting at `atMs`.
   * Before the page opened it is known only back to the merchant's last rate change, and
   * not at all when a 429 penalty was in force (it moves the limit by itself): the chart
   * leaves those seconds blank rather than guess.
   */
  function limitAt(merchantKey, atMs) {
    const seen = limitSeen.get(merchantKey)
    if (seen === undefined || seen.points.length === 0) return null
    const endMs = atMs + 1_000
    let value = null
    for (const point of seen.points) {
      if (point.atMs <= endMs) value = point.perSec
      else break
    }
    if (value !== null) return value
    const first = seen.points[0]
    if (first.penalized || (seen.changedAtMs !== null && seen.changedAtMs > atMs)) return null
    return first.perSec
  }

  function renderCharts(busiest, nowMs, windowS) {
    const box = byId('charts')
    byId('charts-empty').hidden = busiest.length > 0
    const keep = new Set(busiest.map((m) => m.merchantKey))
    for (const [key, chart] of charts) {
      if (!keep.has(key)) {
        chart.plot.destroy()
        chart.box.remove()
        charts.delete(key)
      }
    }
    // The last bucket is the second in progress: leave it out, it would always look low.
    const nowS = Math.floor(nowMs / 1_000)
    const seconds = []
    for (let s = windowS; s >= 1; s--) seconds.push(nowS - s)
    for (const m of busiest) {
      const chart = charts.get(m.merchantKey) ?? createChart(m.merchantKey, box)
      box.append(chart.box)
      const perSec = m.deliveredPerSec.slice(WINDOW_S - 1 - windowS, WINDOW_S - 1)
      const delivered = perSec.map((_, i) => mean(perSec.slice(Math.max(0, i - SMOOTH_S + 1), i + 1)))
      const limits = seconds.map((s) => limitAt(m.merchantKey, s * 1_000))
      chart.plot.setData([seconds, delivered, limits])
      chart.now.textContent = `now ${rateText(delivered[delivered.length - 1] ?? 0)}/s · limit ${rateText(m.limitPerSec)}/s`
    }
  }

  function createChart(merchantKey, box) {
    const chartBox = el('div', 'chart')
    chartBox.dataset.merchant = merchantKey
    const head = el('div', 'chart-head')
    const title = el('span', 'chart-title', merchantKey)
    title.title = merchantKey
    const now = el('span', 'chart-now')
    head.append(title, now)
    const plotBox = el('div')
    chartBox.append(head, plotBox)
    box.append(chartBox)
    const axis = {
      stroke: '#687386',
      font: '11px system-ui, sans-serif',
      grid: { stroke: '#eef1f5', width: 1 },
      ticks: { show: false },
    }
    const plot = new window.uPlot(
      {
        width: plotWidth(chartBox),
        height: 150,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.25 : 1] } },
        axes: [
          { ...axis, space: 80, values: (_u, splits) => splits.map((s) => clockTime(s * 1_000)) },
          { ...axis, size: 42, values: (_u, splits) => splits.map((v) => rateText(v)) },
        ],
        series: [
          {},
          {
            label: 'delivered / s',
            stroke: '#2f6fde',
            width: 2,
            fill: 'rgba(47, 111, 222, 0.12)',
            points: { show: false },
          },
          {
            label: 'limit / s',
            stroke: '#e0661b',
            width: 2,
            dash: [6, 4],
            paths: window.uPlot.paths.stepped({ align: 1 }),
            points: { show: false },
          },
        ],
      },
      [[], [], []],
      plotBox,
    )
    const chart = { box: chartBox, plot, now }
    charts.set(merchantKey, chart)
    return chart
  }

  function plotWidth(chartBox) {
    return Math.max(200, chartBox.clientWidth - 18)
  }

  function renderMerchants(merchants, nowMs, countedS) {
    byId('merchants-empty').hidden = merchants.length > 0
    byId('merchant-count').textContent =
      merchants.length === 0 ? '' : `${merchants.length} most active, busiest first`
    const rows = merchants.map((m) => merchantRow(m, nowMs, countedS))
    const listed = new Set(merchants.map((m) => m.merchantKey))
    for (const key of rateShown.keys()) if (!listed.has(key)) rateShown.delete(key)
    byId('merchants').tBodies[0].replaceChildren(...rows)
  }

  function merchantRow(m, nowMs, countedS) {
    const row = el('tr')
    row.dataset.merchant = m.merchantKey
    const previous = rateShown.get(m.merchantKey)
    const changedAtMs =
      previous === undefined ? null : previous.rate !== m.rate ? performance.now() : previous.changedAtMs
    rateShown.set(m.merchantKey, { rate: m.rate, changedAtMs })

    row.append(cell('merchant', m.merchantKey))
    row.append(stateCell(m))

    const rate = cell('num rate', m.rate)
    if (changedAtMs !== null && performance.now() - changedAtMs < HIGHLIGHT_MS) rate.classList.add('changed')
    rate.append(
      el('span', 'sub', m.penaltyFactor < 1 ? `×${m.penaltyFactor.toFixed(2)} after 429` : scopeOf(m)),
    )
    row.append(rate)

    const perSec = m.deliveredLastMinute / countedS
    const delivered = cell('num', `${rateText(perSec)}/s`)
    const bar = el('span', 'bar')
    const fill = el('span')
    fill.style.width = `${Math.min(100, m.limitPerSec > 0 ? (perSec / m.limitPerSec) * 100 : 0)}%`
    bar.append(fill)
    bar.title = 'share of the limit in force'
    delivered.append(bar, el('span', 'sub', `${count(m.deliveredLastMinute)} jobs`))
    row.append(delivered)
    row.append(failuresCell(m))

    const tokens = cell('num', m.tokens === null ? '–' : Math.max(0, m.tokens).toFixed(1))
    if (m.capacity !== null) tokens.append(el('span', 'sub', `of ${rateText(m.capacity)}`))
    row.append(tokens)

    row.append(waitingCell(m))

    if (m.lastChange === null) {
      row.append(cell('muted', 'none (configured default)'))
    } else {
      const changedAtMs = Date.parse(m.lastChange.atIso)
      const change = cell(
        '',
        `${m.lastChange.scope === 'default' ? 'default' : 'set'} ${m.lastChange.description}`,
      )
      change.title = `version ${m.lastChange.version}, applied ${m.lastChange.atIso}`
      change.append(el('span', 'sub', `${ago(nowMs - changedAtMs)} · ${clockTime(changedAtMs)}`))
      row.append(change)
    }
    return row
  }

  /** waitingCell: the merchant's waiting jobs, how many are parked, the oldest's age and when the last runs. */
  function waitingCell(m) {
    const td = cell('num', count(m.waiting))
    if (m.waiting === 0) return td
    const parts = []
    if (m.parked > 0) parts.push(`${count(m.parked)} parked`)
    if (m.oldestWaitingAgeMs !== null && m.oldestWaitingAgeMs !== undefined) {
      parts.push(`oldest added ${ago(m.oldestWaitingAgeMs)}`)
    }
    // The last job in line runs in about this long, at the rate in force; not when another limit
    // (a parent, a longer window, a Retry-After) holds the merchant below its own rate.
    const ownLimitHolds = m.binding === null || m.binding === undefined || m.binding.binds === 'own'
    if (m.limitPerSec > 0 && ownLimitHolds) {
      parts.push(`last runs in ≈ ${duration(Math.ceil(m.waiting / m.limitPerSec))}`)
    }
    if (parts.length > 0) td.append(el('span', 'sub', parts.join(' · ')))
    if (m.binding !== null && m.binding !== undefined) {
      const binding = el('span', 'sub binding', `held by ${bindingText(m.binding)}`)
      binding.dataset.binds = m.binding.binds
      binding.title = `next job possible in ${m.binding.waitMs} ms; limit keys ${(m.limitKeys ?? [m.merchantKey]).join(' › ')}`
      td.append(binding)
    }
    return td
  }

  /** bindingText says which limit holds a waiting merchant, as explain named it. */
  function bindingText(binding) {
    switch (binding.binds) {
      case 'own':
        return 'its own rate'
      case 'parent':
        return `parent ${binding.key}`
      case 'window':
        return `the ${binding.window ?? 'longer'} window of ${binding.key}`
      case 'retry-after':
        return `a Retry-After on ${binding.key}`
      case 'parent-share':
        return `its share of ${binding.key}`
      default:
        return binding.key
    }
  }

  /** renderParents lists each parent key, its rate and use, and under it its children's weights and use. */
  function renderParents(parents) {
    byId('parents-panel').hidden = parents.length === 0
    byId('parent-count').textContent =
      parents.length === 0 ? '' : `${parents.length} parent ${parents.length === 1 ? 'key' : 'keys'}`
    const rows = []
    for (const p of parents) {
      const row = el('tr', 'parent')
      row.dataset.parent = p.key
      row.append(cell('merchant', p.key))
      row.append(cell('num rate', p.rate ?? 'none of its own'))
      const granted = cell('num', `${rateText(p.grantedPerSec)}/s`)
      if (p.limitPerSec !== null) {
        const bar = el('span', 'bar')
        const fill = el('span')
        fill.style.width = `${Math.min(100, p.limitPerSec > 0 ? (p.grantedPerSec / p.limitPerSec) * 100 : 0)}%`
        bar.append(fill)
        bar.title = "share of the parent's rate"
        granted.append(bar)
      }
      row.append(granted)
      const more = p.childCount > p.children.length ? ` (${p.children.length} listed)` : ''
      row.append(
        cell('', `${count(p.childCount)} children · ${count(p.backloggedChildren)} backlogged${more}`),
      )
      rows.push(row)
      for (const c of p.children) {
        const child = el('tr', 'child')
        child.dataset.child = c.key
        child.append(cell('merchant', c.key))
        child.append(cell('num', `weight ${c.weight}`))
        child.append(cell('num', `${rateText(c.grantedPerSec)}/s`))
        const state = el('td')
        state.append(
          c.backlogged
            ? el('span', 'pill pill-warn', 'backlogged')
            : el('span', 'pill pill-muted', 'not waiting'),
        )
        child.append(state)
        rows.push(child)
      }
    }
    byId('parents').tBodies[0].replaceChildren(...rows)
  }

  function stateCell(m) {
    const td = el('td')
    const breaker = m.breaker === undefined ? 'closed' : m.breaker.state
    if (breaker === 'open') {
      const pill = el('span', 'pill pill-bad', 'circuit open')
      pill.title = `endpoint failing: jobs held, not attempted; probe in ${duration(Math.ceil(m.breaker.retryInMs / 1_000))}`
      td.append(pill)
    } else if (breaker === 'half-open') td.append(el('span', 'pill pill-warn', 'probing'))
    else if (m.penaltyFactor < 1) td.append(el('span', 'pill pill-bad', 'backing off'))
    else if (m.waiting > 0) td.append(el('span', 'pill pill-warn', 'throttled'))
    // A merchant whose every job fails is not idle: its failures say why nothing is delivered.
    else if (m.failedLastMinute > 0 && m.deliveredLastMinute === 0)
      td.append(el('span', 'pill pill-bad', 'failing'))
    else if (m.deliveredLastMinute > 0) td.append(el('span', 'pill pill-ok', 'flowing'))
    else td.append(el('span', 'pill pill-muted', 'idle'))
    if (m.maxInFlight !== undefined && (m.maxInFlight !== null || m.inFlight > 0)) {
      const cap = m.maxInFlight === null ? '' : ` of ${count(m.maxInFlight)}`
      td.append(el('span', 'sub', `${count(m.inFlight)}${cap} in flight`))
    }
    return td
  }

  /** failuresCell: failed attempts and dead letters since the worker started, with the last reason. */
  function failuresCell(m) {
    const failures = m.failures ?? { count: 0, lastReason: null }
    const deadLetters = m.deadLetters ?? { count: 0, lastReason: null }
    const td = cell('num failures', `${count(failures.count)} · ${count(deadLetters.count)}`)
    if (failures.count === 0) td.classList.add('muted')
    const reason = deadLetters.lastReason ?? failures.lastReason
    if (reason !== null) {
      const sub = el('span', 'sub', reason)
      sub.title = deadLetters.lastReason === null ? 'last failure' : 'last dead letter'
      td.append(sub)
    }
    return td
  }

  function scopeOf(m) {
    if (m.lastChange === null) return 'configured default'
    return m.lastChange.scope === 'default' ? 'default' : 'own rate'
  }

  function renderEvents(list, empty, items, fill) {
    empty.hidden = items.length > 0
    list.replaceChildren(
      ...items.map((item) => {
        const li = el('li')
        const time = el('time', '', clockTime(Date.parse(item.atIso)))
        time.dateTime = item.atIso
        li.append(time)
        fill(item, li)
        return li
      }),
    )
  }

  function showNotice(text) {
    const notice = byId('notice')
    notice.hidden = text === null
    notice.textContent = text ?? ''
  }

  function setPill(node, text, kind) {
    node.textContent = text
    node.className = `pill ${kind}`
  }

  function el(tag, className = '', text) {
    const node = document.createElement(tag)
    if (className !== '') node.className = className
    if (text !== undefined) node.textContent = text
    return node
  }

  function cell(className, text) {
    return el('td', className, text)
  }

  function mean(values) {
    return values.length === 0 ? 0 : values.reduce((sum, v) => sum + v, 0) / values.length
  }

  function count(n) {
    return n.toLocaleString('en-US')
  }

  function rateText(perSec) {
    if (perSec === 0) return '0'
    if (perSec >= 100) return count(Math.round(perSec))
    if (perSec >= 10) return perSec.toFixed(0)
    return String(Number(perSec.toFixed(perSec >= 1 ? 1 : 2)))
  }

  function clockTime(ms) {
    const d = new Date(ms)
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':')
  }

  function duration(totalS) {
    if (totalS < 60) return `${totalS} s`
    if (totalS < 3_600) return `${Math.floor(totalS / 60)} min ${totalS % 60} s`
    return `${Math.floor(totalS / 3_600)} h ${Math.floor((totalS % 3_600) / 60)} min`
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1_000))
    if (s < 60) return `${s} s ago`
    if (s < 3_600) return `${Math.floor(s / 60)} min ago`
    if (s < 86_400) return `${Math.floor(s / 3_600)} h ago`
    return `${Math.floor(s / 86_400)} d ago`
  }

  new ResizeObserver(() => {
    for (const chart of charts.values()) chart.plot.setSize({ width: plotWidth(chart.box), height: 150 })
  }).observe(byId('charts'))

  poll()
})()
