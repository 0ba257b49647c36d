/**
 * Dashboard sessions and the operator API's token rule, as data: sessions expire and are capped,
 * the audit name of a session never holds its id, same-origin checks refuse `null` and foreign
 * origins, and the admin token replaces the API token.
 */
import { describe, expect, it } from 'vitest';
import { createSessionStore, operatorApiToken, sameOrigin, tokenMatches } from '../src/operator/auth.js';

describe('dashboard sessions', () => {
  it('expire, can be destroyed, and name the operator without the session id', () => {
    let now = 1_000;
    const sessions = createSessionStore({ ttlMs: 100, now: () => now });
    const s = sessions.create();
    expect(s.id).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(s.csrf).not.toBe(s.id);
    expect(s.operator).toEqual({ via: 'ui', id: expect.stringMatching(/^ui:[0-9a-f]{12}$/) });
    expect(s.operator.id).not.toContain(s.id.slice(0, 12));
    expect(sessions.get(s.id)).toBe(s);
    expect(sessions.get(undefined)).toBeUndefined();
    expect(sessions.get(`${s.id}x`)).toBeUndefined();
    now += 100;
    expect(sessions.get(s.id)).toBeUndefined();
    const t = sessions.create();
    sessions.destroy(t.id);
    expect(sessions.get(t.id)).toBeUndefined();
  });

  it('a flood of logins cannot grow the table without bound: the oldest sessions go first', () => {
    const sessions = createSessionStore();
    const first = sessions.create();
    for (let i = 0; i < 1200; i++) sessions.create();
    expect(sessions.size).toBe(1000);
    expect(sessions.get(first.id)).toBeUndefined();
  });
});

describe('origin and tokens', () => {
  it('accepts only its own origin', () => {
    expect(sameOrigin({ origin: 'http://127.0.0.1:8787', host: '127.0.0.1:8787' })).toBe(true);
    expect(sameOrigin({ referer: 'http://127.0.0.1:8787/ui/agents', host: '127.0.0.1:8787' })).toBe(true);
    expect(sameOrigin({ host: '127.0.0.1:8787' })).toBe(true); // no browser: left to the CSRF token
    expect(sameOrigin({ origin: 'null', host: '127.0.0.1:8787' })).toBe(false);
    expect(sameOrigin({ origin: 'http://127.0.0.1:8788', host: '127.0.0.1:8787' })).toBe(false);
    expect(sameOrigin({ origin: 'http://evil.example', host: '127.0.0.1:8787' })).toBe(false);
    expect(sameOrigin({ origin: 'not a url', host: '127.0.0.1:8787' })).toBe(false);
    expect(sameOrigin({ origin: 'http://127.0.0.1:8787' })).toBe(false);
  });

  it('the admin token, when set, is the only operator token; tokens compare exactly', () => {
    expect(operatorApiToken({ adminToken: 'a'.repeat(16), apiToken: 'b'.repeat(16) })).toBe('a'.repeat(16));
    expect(operatorApiToken({ apiToken: 'b'.repeat(16) })).toBe('b'.repeat(16));
    expect(operatorApiToken({})).toBeUndefined();
    expect(tokenMatches('secret-token-123', 'secret-token-123')).toBe(true);
    for (const bad of [undefined, '', 'secret-token-12', 'secret-token-1234', 'SECRET-TOKEN-123']) expect(tokenMatches(bad, 'secret-token-123')).toBe(false);
  });
});
