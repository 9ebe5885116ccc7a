import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { classifyAddress, TargetGuard } from '../../src/handlers/index.js'
import { testResolver } from './support.js'

// Classification only: nothing in this file opens a connection.

describe('classifyAddress', () => {
  // [address, expected reason, canonical address reported]
  const refused: [string, string, string][] = [
    ['127.0.0.1', 'loopback', '127.0.0.1'],
    ['127.255.255.254', 'loopback', '127.255.255.254'],
    ['::1', 'loopback', '::1'],
    ['0:0:0:0:0:0:0:1', 'loopback', '::1'],
    ['0.0.0.0', 'unspecified', '0.0.0.0'],
    ['0.1.2.3', 'unspecified', '0.1.2.3'], // 0.0.0.0/8, "this network"
    ['::', 'unspecified', '::'],
    ['10.0.0.1', 'private', '10.0.0.1'],
    ['172.16.0.1', 'private', '172.16.0.1'],
    ['172.31.255.255', 'private', '172.31.255.255'],
    ['192.168.1.1', 'private', '192.168.1.1'],
    ['100.64.0.1', 'cgnat', '100.64.0.1'],
    ['100.127.255.255', 'cgnat', '100.127.255.255'],
    ['169.254.169.254', 'link-local', '169.254.169.254'], // cloud metadata
    ['fe80::1', 'link-local', 'fe80::1'],
    ['fe80::1%eth0', 'link-local', 'fe80::1'], // a zone index as DNS may return it
    ['fd00::1', 'unique-local', 'fd00::1'],
    ['fc00::1', 'unique-local', 'fc00::1'],
    ['224.0.0.1', 'multicast', '224.0.0.1'],
    ['239.255.255.250', 'multicast', '239.255.255.250'],
    ['ff02::1', 'multicast', 'ff02::1'],
    ['255.255.255.255', 'broadcast', '255.255.255.255'],
    ['240.0.0.1', 'reserved', '240.0.0.1'],
    ['192.0.0.8', 'reserved', '192.0.0.8'],
    ['198.18.0.1', 'reserved', '198.18.0.1'],
    ['192.0.2.1', 'documentation', '192.0.2.1'],
    ['198.51.100.7', 'documentation', '198.51.100.7'],
    ['203.0.113.9', 'documentation', '203.0.113.9'],
    ['2001:db8::1', 'documentation', '2001:db8::1'],
    ['3fff::1', 'documentation', '3fff::1'],
    ['2001::1', 'reserved', '2001::1'], // Teredo
    ['fec0::1', 'reserved', 'fec0::1'], // deprecated site-local
    ['100::1', 'reserved', '100::1'], // discard-only
    ['4000::1', 'reserved', '4000::1'], // outside global unicast 2000::/3
    // IPv4 inside IPv6: mapped, compatible, NAT64, 6to4
    ['::ffff:127.0.0.1', 'loopback', '::ffff:7f00:1'],
    ['::ffff:7f00:1', 'loopback', '::ffff:7f00:1'],
    ['::ffff:169.254.169.254', 'link-local', '::ffff:a9fe:a9fe'],
    ['::ffff:10.0.0.1', 'private', '::ffff:a00:1'],
    ['::127.0.0.1', 'loopback', '::7f00:1'],
    ['::8.8.8.8', 'reserved', '::808:808'], // IPv4-compatible is deprecated even for a public address
    ['64:ff9b::169.254.169.254', 'link-local', '64:ff9b::a9fe:a9fe'],
    ['64:ff9b::10.0.0.1', 'private', '64:ff9b::a00:1'],
    ['64:ff9b:1::1', 'reserved', '64:ff9b:1::1'],
    ['2002:7f00:1::', 'loopback', '2002:7f00:1::'],
    ['2002:c0a8:101::1', 'private', '2002:c0a8:101::1'],
    // not addresses
    ['localhost', 'invalid-address', 'localhost'],
    ['2130706433', 'invalid-address', '2130706433'], // a URL host form, not an address: parse URLs first
    ['', 'invalid-address', ''],
  ]
  it.each(refused)('refuses %s as %s', (address, reason, canonical) => {
    expect(classifyAddress(address)).toEqual({ allowed: false, address: canonical, reason })
  })

  // Public addresses pass; none of them is ever connected to.
  const allowed: [string, 4 | 6][] = [
    ['93.184.216.34', 4],
    ['8.8.8.8', 4],
    ['1.1.1.1', 4],
    ['100.63.255.255', 4], // just below CGNAT
    ['100.128.0.1', 4], // just above CGNAT
    ['172.15.255.255', 4], // just below 172.16/12
    ['172.32.0.1', 4], // just above 172.16/12
    ['11.0.0.1', 4],
    ['2606:4700:4700::1111', 6],
    ['::ffff:93.184.216.34', 6],
    ['64:ff9b::93.184.216.34', 6],
    ['2002:5db8:d822::1', 6], // 6to4 of a public address
  ]
  it.each(allowed)('allows the public address %s', (address, family) => {
    const verdict = classifyAddress(address)
    expect(verdict.allowed).toBe(true)
    expect(verdict.allowed && verdict.family).toBe(family)
  })

  it('refuses the IPv4-mapped IPv6 form of every refused IPv4 address, for the same reason', () => {
    const octet = fc.integer({ min: 0, max: 255 })
    fc.assert(
      fc.property(fc.tuple(octet, octet, octet, octet), (octets) => {
        const v4 = octets.join('.')
        const direct = classifyAddress(v4)
        const mapped = classifyAddress(`::ffff:${v4}`)
        const nat64 = classifyAddress(`64:ff9b::${v4}`)
        expect(mapped.allowed).toBe(direct.allowed)
        expect(nat64.allowed).toBe(direct.allowed)
        if (!direct.allowed && !mapped.allowed && !nat64.allowed) {
          expect(mapped.reason).toBe(direct.reason)
          expect(nat64.reason).toBe(direct.reason)
        }
      }),
      { numRuns: 1_000 },
    )
  })
})

describe('TargetGuard.checkUrl: the hostile targets of issue 9', () => {
  const guard = new TargetGuard({ httpsOnly: false })
  // [url, reason, address the refusal reports]
  const hostile: [string, string, string][] = [
    ['http://127.0.0.1/', 'loopback', '127.0.0.1'],
    ['http://127.0.0.1:6379/', 'loopback', '127.0.0.1'],
    ['http://[::1]/', 'loopback', '::1'],
    ['http://0.0.0.0/', 'unspecified', '0.0.0.0'],
    ['http://10.0.0.1/', 'private', '10.0.0.1'],
    ['http://172.16.0.1/', 'private', '172.16.0.1'],
    ['http://192.168.1.1/', 'private', '192.168.1.1'],
    ['http://169.254.169.254/latest/meta-data/', 'link-local', '169.254.169.254'],
    ['http://[::ffff:127.0.0.1]/', 'loopback', '::ffff:7f00:1'],
    ['http://[fd00::1]/', 'unique-local', 'fd00::1'],
    ['http://2130706433/', 'loopback', '127.0.0.1'], // decimal
    ['http://0177.0.0.1/', 'loopback', '127.0.0.1'], // octal
    ['http://0x7f.0.0.1/', 'loopback', '127.0.0.1'], // hex
    ['http://0x7f000001/', 'loopback', '127.0.0.1'],
    ['http://127.1/', 'loopback', '127.0.0.1'], // short form
    ['http://017700000001/', 'loopback', '127.0.0.1'],
    ['http://127.0.0.1./', 'loopback', '127.0.0.1'], // trailing dot
    ['http://0/', 'unspecified', '0.0.0.0'],
    ['http://①②⑦.0.0.1/', 'loopback', '127.0.0.1'], // circled digits, mapped by IDNA
    ['http://127。0。0。1/', 'loopback', '127.0.0.1'], // ideographic full stops
    ['http://[::ffff:a9fe:a9fe]/', 'link-local', '::ffff:a9fe:a9fe'],
    ['http://[0:0:0:0:0:ffff:127.0.0.1]/', 'loopback', '::ffff:7f00:1'],
    ['https://[fe80::1]/', 'link-local', 'fe80::1'],
    ['http://100.64.0.1/', 'cgnat', '100.64.0.1'],
    ['http://224.0.0.1/', 'multicast', '224.0.0.1'],
    ['http://255.255.255.255/', 'broadcast', '255.255.255.255'],
  ]
  it.each(hostile)('refuses %s (%s)', (url, reason, address) => {
    const checked = guard.checkUrl(url)
    expect(checked.ok).toBe(false)
    expect(!checked.ok && checked.refusal).toMatchObject({ reason, address })
  })

  it.each([
    ['file:///etc/passwd', 'scheme-not-allowed'],
    ['gopher://127.0.0.1:6379/_INFO', 'scheme-not-allowed'],
    ['ftp://93.184.216.34/', 'scheme-not-allowed'],
    ['http://user:secret@93.184.216.34/', 'credentials-in-url'],
    ['not a url', 'invalid-url'],
    ['http://256.0.0.1/', 'invalid-url'],
  ])('refuses %s as %s', (url, reason) => {
    const checked = guard.checkUrl(url)
    expect(!checked.ok && checked.refusal.reason).toBe(reason)
  })

  it('lets a public IP literal and a host name through (the name is checked when resolved)', () => {
    expect(guard.checkUrl('http://93.184.216.34/hook')).toMatchObject({
      ok: true,
      host: '93.184.216.34',
      literal: true,
    })
    expect(guard.checkUrl('https://merchant.example/hook')).toMatchObject({ ok: true, literal: false })
  })

  it('refuses plain http when https is required, which is the default', () => {
    const strict = new TargetGuard()
    const checked = strict.checkUrl('http://93.184.216.34/')
    expect(!checked.ok && checked.refusal.reason).toBe('https-required')
    expect(strict.checkUrl('https://93.184.216.34/').ok).toBe(true)
  })
})

describe('TargetGuard with a resolver (no connection)', () => {
  const resolve = testResolver({
    localhost: ['127.0.0.1', '::1'],
    'metadata.test': ['169.254.169.254'],
    'mixed.test': ['93.184.216.34', '10.0.0.1'], // one good address does not excuse a bad one
    'public.test': ['93.184.216.34', '2606:4700:4700::1111'],
    'sim.test': ['127.0.0.1'],
  })
  const guard = new TargetGuard({ httpsOnly: false, resolve })

  it.each([
    ['http://localhost/', 'loopback', '127.0.0.1'],
    ['http://LOCALHOST./', 'loopback', '127.0.0.1'],
    ['http://metadata.test/latest/meta-data/', 'link-local', '169.254.169.254'],
    ['http://mixed.test/', 'private', '10.0.0.1'],
  ])('checkTarget refuses %s (%s at %s)', async (url, reason, address) => {
    expect(await guard.checkTarget(url)).toMatchObject({ reason, address })
  })

  it('checkTarget passes a name whose every address is public', async () => {
    expect(await guard.checkTarget('http://public.test/')).toBeUndefined()
  })

  it('checkTarget rejects a name that does not resolve', async () => {
    await expect(guard.checkTarget('http://nowhere.test/')).rejects.toThrow('ENOTFOUND')
  })

  it('lookup hands the connector the checked addresses in the form it asks for, or a refusal', async () => {
    const lookup = (hostname: string, all: boolean) =>
      new Promise<{ error: NodeJS.ErrnoException | null; address: unknown; family?: number }>(
        (resolveLookup) =>
          guard.lookup(hostname, { all }, (error, address, family) =>
            resolveLookup({ error, address, family }),
          ),
      )
    expect(await lookup('public.test', true)).toEqual({
      error: null,
      address: [
        { address: '93.184.216.34', family: 4 },
        { address: '2606:4700:4700::1111', family: 6 },
      ],
      family: undefined,
    })
    expect(await lookup('public.test', false)).toEqual({ error: null, address: '93.184.216.34', family: 4 })
    const refused = await lookup('metadata.test', true)
    expect(refused.error?.message).toContain('169.254.169.254')
    expect(refused.error).toMatchObject({ refusal: { reason: 'link-local', address: '169.254.169.254' } })
  })

  it('allowHosts exempts exact names, addresses and CIDRs, and nothing else', async () => {
    const allowing = new TargetGuard({
      httpsOnly: false,
      resolve,
      allowHosts: ['sim.test', '127.0.0.1', '10.1.0.0/16', 'fd00:1::/32'],
    })
    expect(await allowing.checkTarget('http://sim.test/')).toBeUndefined()
    expect(allowing.checkUrl('http://127.0.0.1:9/').ok).toBe(true)
    expect(allowing.checkUrl('http://10.1.2.3/').ok).toBe(true)
    expect(allowing.checkUrl('http://[fd00:1::5]/').ok).toBe(true)
    expect(allowing.checkUrl('http://127.0.0.2/').ok).toBe(false)
    expect(allowing.checkUrl('http://10.2.0.1/').ok).toBe(false)
    expect(allowing.checkUrl('http://[fd00:2::5]/').ok).toBe(false)
    expect(await allowing.checkTarget('http://localhost/')).toMatchObject({
      reason: 'loopback',
      address: '::1',
    })
  })

  it.each([['10.0.0.0/33'], ['not a host!'], ['/8'], ['']])('refuses the allowHosts entry %j', (entry) => {
    expect(() => new TargetGuard({ allowHosts: [entry] })).toThrow(TypeError)
  })
})
