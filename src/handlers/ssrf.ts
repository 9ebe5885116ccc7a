import { lookup as dnsLookup } from 'node:dns/promises'
import { BlockList, isIP, type LookupFunction } from 'node:net'

/**
 * AddressRefusalReason names the range an address was refused for. `reserved` covers
 * IETF-reserved, benchmarking, deprecated and not-global-unicast IPv6 space; `invalid-address`
 * is a string that is no IP address at all.
 */
export type AddressRefusalReason =
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'unique-local'
  | 'link-local'
  | 'multicast'
  | 'unspecified'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  | 'invalid-address'

/** AddressClass is classifyAddress's answer; `address` is the address in canonical form. */
export type AddressClass =
  | { readonly allowed: true; readonly address: string; readonly family: 4 | 6 }
  | { readonly allowed: false; readonly address: string; readonly reason: AddressRefusalReason }

type Range = readonly [network: string, prefix: number, reason: AddressRefusalReason]

// The first matching range decides, so 255.255.255.255 is a broadcast before 240/4 is reserved.
const IPV4_RANGES: readonly Range[] = [
  ['255.255.255.255', 32, 'broadcast'],
  ['0.0.0.0', 8, 'unspecified'], // "this network"; Linux connects 0.0.0.0 to the local host
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'], // includes the cloud metadata address 169.254.169.254
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'reserved'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
]

// IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are handled before these.
const IPV6_RANGES: readonly Range[] = [
  ['64:ff9b:1::', 48, 'reserved'], // local-use NAT64
  ['100::', 64, 'reserved'], // discard-only
  ['2001::', 23, 'reserved'], // IETF protocol assignments, Teredo included
  ['2001:db8::', 32, 'documentation'],
  ['3fff::', 20, 'documentation'],
  ['fc00::', 7, 'unique-local'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'reserved'], // deprecated site-local
  ['ff00::', 8, 'multicast'],
]

function compile(ranges: readonly Range[], family: 'ipv4' | 'ipv6') {
  return ranges.map(([network, prefix, reason]) => {
    const list = new BlockList()
    list.addSubnet(network, prefix, family)
    return { list, reason }
  })
}

const IPV4_LISTS = compile(IPV4_RANGES, 'ipv4')
const IPV6_LISTS = compile(IPV6_RANGES, 'ipv6')

/**
 * classifyAddress says whether an outbound request may connect to `address`, an IPv4 or IPv6
 * address (a zone index such as `%eth0` is ignored). It refuses loopback, RFC 1918, CGNAT,
 * link-local (the cloud metadata address included), unique-local, multicast, unspecified,
 * broadcast, documentation and reserved ranges, and the IPv4-mapped, IPv4-compatible, NAT64
 * and 6to4 IPv6 forms of refused IPv4 addresses. Only IPv6 global unicast (2000::/3) can pass.
 * Pure: no DNS, no I/O. Odd IPv4 spellings (`2130706433`, `0177.0.0.1`) are not addresses
 * here; parse URLs with WHATWG URL first, which normalizes them (TargetGuard does).
 */
export function classifyAddress(address: string): AddressClass {
  const zone = address.indexOf('%')
  const bare = zone === -1 ? address : address.slice(0, zone)
  switch (isIP(bare)) {
    case 4:
      return classifyIpv4(bare)
    case 6:
      return classifyIpv6(bare)
    default:
      return { allowed: false, address, reason: 'invalid-address' }
  }
}

function classifyIpv4(address: string): AddressClass {
  for (const { list, reason } of IPV4_LISTS) {
    if (list.check(address, 'ipv4')) return { allowed: false, address, reason }
  }
  return { allowed: true, address, family: 4 }
}

function classifyIpv6(address: string): AddressClass {
  const groups = ipv6Groups(address)
  if (groups === undefined) return { allowed: false, address, reason: 'invalid-address' }
  const canonical = formatIpv6(groups)
  const [g0, g1, g2, g3, g4, g5] = groups as [number, number, number, number, number, number]
  const upperZero = g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0
  if (upperZero && g5 === 0) {
    const low = ipv4From(groups[6]!, groups[7]!)
    if (low === '0.0.0.0') return { allowed: false, address: canonical, reason: 'unspecified' }
    if (low === '0.0.0.1') return { allowed: false, address: canonical, reason: 'loopback' }
    // IPv4-compatible (deprecated): refused for the embedded address's reason, else as reserved.
    const embedded = classifyIpv4(low)
    return { allowed: false, address: canonical, reason: embedded.allowed ? 'reserved' : embedded.reason }
  }
  const embedded = embeddedIpv4(groups)
  if (embedded !== undefined) {
    const inner = classifyIpv4(embedded)
    return inner.allowed
      ? { allowed: true, address: canonical, family: 6 }
      : { allowed: false, address: canonical, reason: inner.reason }
  }
  for (const { list, reason } of IPV6_LISTS) {
    if (list.check(canonical, 'ipv6')) return { allowed: false, address: canonical, reason }
  }
  if ((g0 & 0xe000) !== 0x2000) return { allowed: false, address: canonical, reason: 'reserved' }
  return { allowed: true, address: canonical, family: 6 }
}

/** embeddedIpv4 is the IPv4 address inside an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address. */
function embeddedIpv4(groups: readonly number[]): string | undefined {
  const [g0, g1, g2, g3, g4, g5, g6, g7] = groups as readonly number[] as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const middleZero = g2 === 0 && g3 === 0 && g4 === 0
  if (g0 === 0 && g1 === 0 && middleZero && g5 === 0xffff) return ipv4From(g6, g7)
  if (g0 === 0x64 && g1 === 0xff9b && middleZero && g5 === 0) return ipv4From(g6, g7)
  if (g0 === 0x2002) return ipv4From(g1, g2)
  return undefined
}

function ipv4From(high: number, low: number): string {
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`
}

/** ipv6Groups is the eight 16-bit groups of an IPv6 address, or undefined when it is none. */
function ipv6Groups(address: string): number[] | undefined {
  if (isIP(address) !== 6) return undefined
  // WHATWG URL serializes IPv6 canonically: lower-case hex, no dotted quad, one `::`.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1)
  const [head = '', tail] = canonical.split('::')
  const parse = (part: string) =>
    part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16))
  const left = parse(head)
  if (tail === undefined) return left
  const right = parse(tail)
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
}

function formatIpv6(groups: readonly number[]): string {
  return new URL(`http://[${groups.map((group) => group.toString(16)).join(':')}]/`).hostname.slice(1, -1)
}

/** ResolvedAddress is one answer of a Resolver. */
export interface ResolvedAddress {
  readonly address: string
  readonly family: number
}

/**
 * Resolver returns every address of a host name. It rejects when the name does not resolve.
 * Tests inject one that maps names to loopback addresses.
 */
export type Resolver = (hostname: string) => Promise<readonly ResolvedAddress[]>

/** systemResolver asks the operating system (`dns.lookup` with `all: true`), as Node's connect does. */
export const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true, verbatim: true })

/**
 * TargetRefusalReason: an address range (AddressRefusalReason), or a URL that is unparseable
 * (`invalid-url`), not http(s) (`scheme-not-allowed`), plain http when https is required
 * (`https-required`), or carries a user name or password (`credentials-in-url`).
 */
export type TargetRefusalReason =
  | AddressRefusalReason
  | 'invalid-url'
  | 'scheme-not-allowed'
  | 'https-required'
  | 'credentials-in-url'

/** TargetRefusal says why the guard refused a target: the host and, once resolved, the address. */
export interface TargetRefusal {
  readonly reason: TargetRefusalReason
  readonly host: string
  readonly address?: string
}

/** UrlCheck is checkUrl's answer: the parsed URL, or the refusal. */
export type UrlCheck =
  | { readonly ok: true; readonly url: URL; readonly host: string; readonly literal: boolean }
  | { readonly ok: false; readonly refusal: TargetRefusal }

/** TargetGuardOptions configure a TargetGuard. */
export interface TargetGuardOptions {
  /**
   * allowHosts exempts targets from the address check: host names (matched exactly, case
   * and a trailing dot ignored), IP addresses, and CIDRs (`10.1.0.0/16`, `fd00::/8`). For
   * development and tests (the merchant simulator on 127.0.0.1). Default: none.
   */
  allowHosts?: readonly string[]
  /** httpsOnly refuses `http:` targets. Default: true (the production setting). */
  httpsOnly?: boolean
  /** resolve turns a host name into addresses. Default: systemResolver. */
  resolve?: Resolver
}

/**
 * TargetRefusedError is how the guarded lookup refuses a connection inside undici; the HTTP
 * client turns it back into a refusal result, so callers never see it.
 */
export class TargetRefusedError extends Error {
  readonly refusal: TargetRefusal
  constructor(refusal: TargetRefusal) {
    super(
      `ssrf-blocked: ${refusal.host}${refusal.address === undefined ? '' : ` (${refusal.address})`} is ${refusal.reason}`,
    )
    this.name = 'TargetRefusedError'
    this.refusal = refusal
  }
}

/**
 * TargetGuard decides which outbound targets may be reached (SSRF protection). checkUrl
 * checks the URL and an IP-literal host; `lookup`, given to the connector as its DNS lookup,
 * resolves a host name once, checks every address, and hands the connector only checked
 * addresses, so there is no second lookup that DNS rebinding could change. TLS still gets the
 * host name for SNI and certificate checks.
 */
export class TargetGuard {
  private readonly allowedNames = new Set<string>()
  private readonly allowedAddresses = new BlockList()
  private readonly httpsOnly: boolean
  private readonly resolve: Resolver

  constructor(options: TargetGuardOptions = {}) {
    const allowHosts = options.allowHosts ?? []
    if (!Array.isArray(allowHosts)) {
      throw new TypeError(
        `TargetGuard: expected allowHosts to be an array of strings, got ${typeof allowHosts}`,
      )
    }
    for (const entry of allowHosts) this.allow(entry)
    if (options.httpsOnly !== undefined && typeof options.httpsOnly !== 'boolean') {
      throw new TypeError(`TargetGuard: expected httpsOnly to be a boolean, got ${typeof options.httpsOnly}`)
    }
    this.httpsOnly = options.httpsOnly ?? true
    if (options.resolve !== undefined && typeof options.resolve !== 'function') {
      throw new TypeError(`TargetGuard: expected resolve to be a function, got ${typeof options.resolve}`)
    }
    this.resolve = options.resolve ?? systemResolver
  }

  /** checkAddress classifies `address`, letting allowlisted addresses and CIDRs through. */
  checkAddress(address: string): AddressClass {
    const family = isIP(address)
    if (family === 4 || family === 6) {
      if (this.allowedAddresses.check(address, family === 4 ? 'ipv4' : 'ipv6'))
        return { allowed: true, address, family }
    }
    return classifyAddress(address)
  }

  /**
   * checkUrl parses `raw` with WHATWG URL (which turns `2130706433` and `0177.0.0.1` into
   * `127.0.0.1`) and refuses other schemes, http when https is required, credentials in the
   * URL, and an IP-literal host the address check refuses. A host name is checked at connect
   * time by `lookup`, or by checkTarget.
   */
  checkUrl(raw: string): UrlCheck {
    let url: URL
    try {
      url = new URL(raw)
    } catch {
      return { ok: false, refusal: { reason: 'invalid-url', host: '' } }
    }
    const host = hostOf(url)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return { ok: false, refusal: { reason: 'scheme-not-allowed', host } }
    }
    if (this.httpsOnly && url.protocol === 'http:')
      return { ok: false, refusal: { reason: 'https-required', host } }
    if (url.username !== '' || url.password !== '') {
      return { ok: false, refusal: { reason: 'credentials-in-url', host } }
    }
    if (isIP(host) === 0) return { ok: true, url, host, literal: false }
    const verdict = this.checkAddress(host)
    if (!verdict.allowed)
      return { ok: false, refusal: { reason: verdict.reason, host, address: verdict.address } }
    return { ok: true, url, host, literal: true }
  }

  /**
   * resolveChecked resolves `hostname` and checks every address: one refused address refuses
   * the host. An allowlisted name is not checked. Rejects when the name does not resolve.
   */
  async resolveChecked(
    hostname: string,
  ): Promise<{ ok: true; addresses: readonly ResolvedAddress[] } | { ok: false; refusal: TargetRefusal }> {
    const host = normalizeName(hostname)
    const addresses = await this.resolve(host)
    if (addresses.length === 0) {
      throw Object.assign(new Error(`no address for ${host}`), { code: 'ENOTFOUND', hostname: host })
    }
    if (this.allowedNames.has(host)) return { ok: true, addresses }
    for (const { address } of addresses) {
      const verdict = this.checkAddress(address)
      if (!verdict.allowed)
        return { ok: false, refusal: { reason: verdict.reason, host, address: verdict.address } }
    }
    return { ok: true, addresses }
  }

  /**
   * checkTarget checks a URL end to end without connecting: the URL, then every address of a
   * host name. It answers the refusal, or undefined when the target may be reached. Rejects
   * when the name does not resolve. Used on redirect targets, which are never followed.
   */
  async checkTarget(raw: string): Promise<TargetRefusal | undefined> {
    const checked = this.checkUrl(raw)
    if (!checked.ok) return checked.refusal
    if (checked.literal) return undefined
    const resolved = await this.resolveChecked(checked.host)
    return resolved.ok ? undefined : resolved.refusal
  }

  /**
   * lookup is a `net.connect` lookup function: the connector's only DNS lookup. It calls back
   * with the checked addresses, or with a TargetRefusedError.
   */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    this.resolveChecked(hostname).then(
      (resolved) => {
        if (!resolved.ok) {
          callback(new TargetRefusedError(resolved.refusal), '', 0)
          return
        }
        const wanted = options.family === 4 || options.family === 6 ? options.family : undefined
        const usable = resolved.addresses.filter((entry) => wanted === undefined || entry.family === wanted)
        const first = usable[0]
        if (first === undefined) {
          const error = Object.assign(new Error(`no IPv${wanted} address for ${hostname}`), {
            code: 'ENOTFOUND',
          })
          callback(error, '', 0)
        } else if (options.all) {
          callback(
            null,
            usable.map(({ address, family }) => ({ address, family })),
          )
        } else {
          callback(null, first.address, first.family)
        }
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    )
  }

  private allow(entry: unknown): void {
    if (typeof entry !== 'string' || entry.length === 0) {
      throw new TypeError(
        `TargetGuard: expected allowHosts entries to be non-empty strings, got ${String(entry)}`,
      )
    }
    const slash = entry.indexOf('/')
    if (slash !== -1) {
      const network = entry.slice(0, slash)
      const prefix = Number(entry.slice(slash + 1))
      const family = isIP(network)
      const maxPrefix = family === 4 ? 32 : 128
      if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > maxPrefix) {
        throw new TypeError(
          `TargetGuard: expected an allowHosts CIDR like 10.0.0.0/8 or fd00::/8, got ${entry}`,
        )
      }
      this.allowedAddresses.addSubnet(network, prefix, family === 4 ? 'ipv4' : 'ipv6')
      return
    }
    const bare = entry.startsWith('[') && entry.endsWith(']') ? entry.slice(1, -1) : entry
    const family = isIP(bare)
    if (family !== 0) {
      this.allowedAddresses.addAddress(bare, family === 4 ? 'ipv4' : 'ipv6')
      return
    }
    if (!/^[A-Za-z0-9.-]+$/.test(entry)) {
      throw new TypeError(`TargetGuard: expected an allowHosts host name, address or CIDR, got ${entry}`)
    }
    this.allowedNames.add(normalizeName(entry))
  }
}

/** hostOf is the URL's host without IPv6 brackets. */
function hostOf(url: URL): string {
  const host = url.hostname
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

function normalizeName(hostname: string): string {
  const lower = hostname.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}
