import { describe, expect, it } from 'vitest';
import { createRedactor } from './redact.js';

describe('redactor', () => {
  const secret = 'sk-live-4f9a"x/y+z';
  const r = createRedactor([{ name: 'api-key', value: secret }, 'plainvalue', 'abc']);

  it('replaces named values by name and anonymous ones by ***; ignores values under 4 characters', () => {
    expect(r(`key=${secret}; other=plainvalue; abc stays`)).toBe('key=[redacted:api-key]; other=***; abc stays');
    expect(r.size).toBe(2);
    expect(r.text(`${secret}${secret}`)).toEqual({ text: '[redacted:api-key][redacted:api-key]', count: 2 });
  });

  it('catches JSON-escaped, URL-encoded and base64 forms', () => {
    expect(r(JSON.stringify({ k: secret }))).toBe('{"k":"[redacted:api-key]"}');
    expect(r(`https://x/?k=${encodeURIComponent(secret)}`)).toBe('https://x/?k=[redacted:api-key]');
    expect(r(`Basic ${Buffer.from(secret).toString('base64')}`)).toBe('Basic [redacted:api-key]');
  });

  it('prefers the longest match when one secret contains another', () => {
    const nested = createRedactor([{ name: 'short', value: 'token' }, { name: 'long', value: 'token-extended' }]);
    expect(nested('a token-extended b token')).toBe('a [redacted:long] b [redacted:short]');
  });

  it('redacts text files and keeps binary files the same length', () => {
    const t = r.buffer(Buffer.from(`line 1\nsecret: ${secret}\n`));
    expect(t.count).toBe(1);
    expect(t.data.toString()).toBe('line 1\nsecret: [redacted:api-key]\n');
    const bin = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00]), Buffer.from(secret), Buffer.from([0xc3])]);
    const b = r.buffer(bin);
    expect(b.count).toBe(1);
    expect(b.data.length).toBe(bin.length);
    expect(b.data.includes(Buffer.from(secret))).toBe(false);
    const clean = Buffer.from('nothing here');
    expect(r.buffer(clean).data).toBe(clean);
  });

  it('is a no-op without values', () => {
    const none = createRedactor([]);
    expect(none('anything')).toBe('anything');
    expect(none.test('anything')).toBe(false);
    expect(r.test(`x${secret}`)).toBe(true);
  });
});
