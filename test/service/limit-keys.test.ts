import { describe, expect, it } from 'vitest'
import { InvalidMerchantKeyError, MerchantThrottleError } from '../../src/errors.js'
import {
  checkKeyTemplates,
  compileKeyTemplates,
  LimitKeyError,
  MAX_KEY_TEMPLATES,
} from '../../src/service/limit-keys.js'

const PSP_KEYS = ['psp:{psp}', 'psp:{psp}:{merchant}']

function thrown(run: () => unknown): LimitKeyError {
  try {
    run()
  } catch (error) {
    if (error instanceof LimitKeyError) return error
    throw error
  }
  throw new Error('expected a LimitKeyError, got keys')
}

describe('compileKeyTemplates', () => {
  it('fills the templates outermost first from the merchant key and the job data', () => {
    const limitKeys = compileKeyTemplates(PSP_KEYS)
    expect(limitKeys('m_42', { psp: 'adyen', amount: 10 })).toEqual(['psp:adyen', 'psp:adyen:m_42'])
  })

  it('gives one key, not a list, for one template', () => {
    expect(compileKeyTemplates(['acct:{account}:{merchant}'])('m1', { account: 'a7' })).toBe('acct:a7:m1')
  })

  it('reads nested fields with {a.b}, and numbers as their decimal text', () => {
    const limitKeys = compileKeyTemplates(['psp:{route.psp}', 'psp:{route.psp}:{shop.id}'])
    expect(limitKeys('m1', { route: { psp: 'stripe' }, shop: { id: 1234 } })).toEqual([
      'psp:stripe',
      'psp:stripe:1234',
    ])
    expect(compileKeyTemplates(['n:{n}'])('m', { n: -1.5 })).toBe('n:-1.5')
  })

  it('takes a template without placeholders: one key for every job of the source', () => {
    expect(compileKeyTemplates(['global', '{merchant}'])('m1', {})).toEqual(['global', 'm1'])
  })

  it('refuses a job lacking a field, naming the template and the field', () => {
    const limitKeys = compileKeyTemplates(PSP_KEYS)
    const error = thrown(() => limitKeys('m_42', { amount: 10 }))
    expect(error.message).toBe("key template 'psp:{psp}' field 'psp': missing from the job data")
    expect(error).toMatchObject({ template: 'psp:{psp}', field: 'psp', code: 'INVALID_LIMIT_KEY' })
    expect(error).toBeInstanceOf(MerchantThrottleError)
    expect(error).not.toBeInstanceOf(InvalidMerchantKeyError)
  })

  it('refuses data that is not an object (a Kafka value that is not JSON) as lacking the field', () => {
    const limitKeys = compileKeyTemplates(PSP_KEYS)
    for (const data of [null, undefined, 'adyen', 42, ['adyen']]) {
      expect(thrown(() => limitKeys('m1', data)).message).toContain("field 'psp': missing")
    }
  })

  it('reads own fields only, never the prototype', () => {
    const limitKeys = compileKeyTemplates(['k:{constructor}', 'k:{toString.name}'])
    expect(thrown(() => limitKeys('m', {})).field).toBe('constructor')
    const inherited = Object.create({ psp: 'adyen' }) as object
    expect(thrown(() => compileKeyTemplates(PSP_KEYS)('m', inherited)).field).toBe('psp')
  })

  it('refuses a field that is not a string or a finite number, saying what it is', () => {
    const limitKeys = compileKeyTemplates(['psp:{psp}'])
    const cases: Array<[unknown, string]> = [
      [true, 'boolean'],
      [null, 'null'],
      [{ id: 'adyen' }, 'an object'],
      [['adyen'], 'an array'],
      [Number.NaN, 'NaN'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [10n, 'bigint'],
    ]
    for (const [value, described] of cases) {
      expect(thrown(() => limitKeys('m', { psp: value })).message).toBe(
        `key template 'psp:{psp}' field 'psp': expected a string or a finite number, got ${described}`,
      )
    }
  })

  it('refuses an empty value rather than give a key of the bare prefix', () => {
    expect(thrown(() => compileKeyTemplates(['psp:{psp}'])('m', { psp: '' })).message).toBe(
      "key template 'psp:{psp}' field 'psp': empty",
    )
  })

  it('refuses a huge value without building the key, and names the field', () => {
    const huge = 'a'.repeat(5_000_000)
    const error = thrown(() => compileKeyTemplates(PSP_KEYS)('m1', { psp: huge }))
    expect(error.field).toBe('psp')
    expect(error.message).toBe(
      "key template 'psp:{psp}' field 'psp': the key would be longer than 128 characters (a value of 5000000)",
    )
  })

  it('refuses a key longer than the bound once filled, at the field that passes it', () => {
    const limitKeys = compileKeyTemplates(['{a}:{merchant}'], 20)
    expect(limitKeys('m'.repeat(10), { a: 'b'.repeat(9) })).toBe(`${'b'.repeat(9)}:${'m'.repeat(10)}`)
    const error = thrown(() => limitKeys('m'.repeat(11), { a: 'b'.repeat(9) }))
    expect(error.field).toBe('merchant')
    expect(error.message).toContain('longer than 20 characters')
  })

  it('refuses characters a key may not hold after substitution, quoting a bounded part of the value', () => {
    const limitKeys = compileKeyTemplates(PSP_KEYS)
    expect(thrown(() => limitKeys('m1', { psp: 'ad yen' })).message).toBe(
      `key template 'psp:{psp}' field 'psp': value "ad yen" has characters outside [A-Za-z0-9-_.:@/+=]`,
    )
    const long = `${'x'.repeat(100)}*`
    const message = thrown(() => compileKeyTemplates(['{psp}'], 200)('m', { psp: long })).message
    expect(message).toContain(`"${'x'.repeat(60)}…"`)
    expect(message.length).toBeLessThan(160)
    for (const bad of ['a\nb', 'é', '{x}', 'a,b']) {
      expect(thrown(() => limitKeys('m1', { psp: bad })).field).toBe('psp')
    }
  })

  it('refuses two templates that give the same key for a job', () => {
    const limitKeys = compileKeyTemplates(['{a}', '{b}'])
    expect(limitKeys('m', { a: 'x', b: 'y' })).toEqual(['x', 'y'])
    expect(thrown(() => limitKeys('m', { a: 'x', b: 'x' })).message).toBe(
      "key template '{b}': gives 'x', the same key as template '{a}'",
    )
  })

  it('throws a TypeError for templates checkKeyTemplates refuses', () => {
    expect(() => compileKeyTemplates(['psp:{psp'])).toThrow(TypeError)
    expect(() => compileKeyTemplates([])).toThrow(/expected 1 to 4 templates, got 0/)
  })
})

describe('checkKeyTemplates', () => {
  it('accepts the templates of the README', () => {
    expect(checkKeyTemplates(PSP_KEYS)).toEqual([])
    expect(checkKeyTemplates(['psp:{pspId}', 'psp:{pspId}:{merchantId}', 'acct:{a.b-c}:{$x}'])).toEqual([])
  })

  it('names each bad template and what is wrong with it', () => {
    const cases: Array<[string, string]> = [
      ['', "template '': empty"],
      ['psp:{psp', "template 'psp:{psp': '{' without '}'"],
      ['psp:psp}', "template 'psp:psp}': '}' without '{'"],
      ['psp:{{psp}}', "template 'psp:{{psp}}': '{' inside a placeholder"],
      [
        'psp:{}',
        "template 'psp:{}': placeholder '{}': expected {merchant}, {field} or {a.b} (letters, digits, _ $ -)",
      ],
      [
        'psp:{a..b}',
        "template 'psp:{a..b}': placeholder '{a..b}': expected {merchant}, {field} or {a.b} (letters, digits, _ $ -)",
      ],
      [
        'psp:{a b}',
        "template 'psp:{a b}': placeholder '{a b}': expected {merchant}, {field} or {a.b} (letters, digits, _ $ -)",
      ],
      ['psp {psp}', "template 'psp {psp}': text 'psp ' has characters outside [A-Za-z0-9-_.:@/+=]"],
      ['*', "template '*': text '*' has characters outside [A-Za-z0-9-_.:@/+=]"],
      [
        `${'p'.repeat(128)}{x}`,
        `template '${'p'.repeat(128)}{x}': its keys would be longer than 128 characters`,
      ],
    ]
    for (const [template, problem] of cases) expect(checkKeyTemplates([template])).toEqual([problem])
  })

  it('refuses an empty list, more than four, a repeat and a template that is not a string', () => {
    expect(checkKeyTemplates([])).toEqual([`expected 1 to ${MAX_KEY_TEMPLATES} templates, got 0`])
    expect(checkKeyTemplates(['a', 'b', 'c', 'd', 'e'])).toEqual(['expected 1 to 4 templates, got 5'])
    expect(checkKeyTemplates(['{merchant}', '{merchant}'])).toEqual(["template '{merchant}' is listed twice"])
    expect(checkKeyTemplates([3])).toEqual(['expected a template string, got number'])
  })
})
