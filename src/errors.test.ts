import { describe, expect, it } from 'vitest';
import { describeError } from './errors.js';

/** What drizzle's DrizzleQueryError looks like (drizzle-orm is imported only in src/store). */
function queryError(query: string, params: unknown[], cause: Error): Error {
  return new Error(`Failed query: ${query}\nparams: ${params.join(',')}`, { cause });
}

describe('describeError', () => {
  it("says why a query failed, never the query or its parameters (an agent's text)", () => {
    const cause = Object.assign(new Error('write CONNECTION_CLOSED 127.0.0.1:5432'), { code: 'CONNECTION_CLOSED' });
    const err = queryError('insert into sessions (profile, conversation) values ($1, $2)', ['p', 'a secret the person typed'], cause);
    const text = describeError(err);
    expect(text).toBe('a database query failed (write CONNECTION_CLOSED 127.0.0.1:5432)');
    expect(text).not.toMatch(/insert|secret/);
    const coded = queryError('select 1', [], Object.assign(new Error('relation "x" does not exist'), { code: '42P01' }));
    expect(describeError(coded)).toBe('a database query failed (42P01: relation "x" does not exist)');
  });

  it('keeps any other error as its message', () => {
    expect(describeError(new Error('plain'))).toBe('plain');
    expect(describeError('text')).toBe('text');
  });
});
