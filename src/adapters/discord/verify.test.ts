import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createInteractionVerifier, discordPublicKey } from './verify.js';

describe('createInteractionVerifier', () => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const hex = publicKey.export({ format: 'der', type: 'spki' }).subarray(12).toString('hex');
  const verify = createInteractionVerifier(hex);
  const body = Buffer.from('{"type":1}');
  const ts = '1700000000';
  const sig = sign(null, Buffer.concat([Buffer.from(ts), body]), privateKey).toString('hex');

  it('accepts a signature over timestamp + raw body', () => {
    expect(verify(sig, ts, body)).toBe(true);
    expect(verify(sig.toUpperCase(), ts, body)).toBe(true);
  });

  it('rejects anything else without throwing', () => {
    expect(verify(sig, '1700000001', body)).toBe(false);
    expect(verify(sig, ts, Buffer.from('{"type":2}'))).toBe(false);
    expect(verify(undefined, ts, body)).toBe(false);
    expect(verify(sig, undefined, body)).toBe(false);
    expect(verify('zz', ts, body)).toBe(false);
    expect(verify(sig.slice(2), ts, body)).toBe(false);
  });

  it('refuses a malformed public key at construction', () => {
    expect(() => discordPublicKey('abc')).toThrow(/64 hex/);
  });
});
