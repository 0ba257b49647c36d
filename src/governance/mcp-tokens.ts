/**
 * The MCP proxy's bearer tokens: one per turn, bound to a profile, a session and (when given) a
 * turn, short-lived, revocable one by one (the turn ended), per session, or all at once (the unit
 * stopped). Only the SHA-256 of a token is kept, so a heap dump does not hand out live tokens.
 *
 * The table never grows without bound: a released token is gone at once, and expired ones are
 * swept whenever a token is minted (at most once a second) and whenever one is presented.
 * Ending a token (release, revoke, expiry) also aborts its `signal`, so calls still running in
 * its name (one waiting for a person, say) end with it.
 *
 * Deliberately left out: persistence. Tokens die with the process, which is what a restarted
 * gateway wants (the agent gets a fresh token with its next turn).
 */
import { createHash, randomBytes } from 'node:crypto';

export interface TokenBinding {
  profile: string;
  sessionKey: string;
  /** The turn the token was minted for, when the caller named one: in every audit row it authorises. */
  turnId: string | undefined;
  /** performance.now() after which the token is refused. */
  expires: number;
  /** Aborted when the token ends (released, revoked, expired and swept). */
  signal: AbortSignal;
}

export interface MintedToken {
  token: string;
  binding: TokenBinding;
  /** Revokes this token now. Idempotent. */
  release(): void;
}

export interface TokenTable {
  mint(b: { profile: string; sessionKey: string; turnId?: string; ttlMs: number }): MintedToken;
  /** The binding of a live token; undefined for unknown, expired or revoked ones. */
  lookup(token: string): TokenBinding | undefined;
  /** Revokes every token of a session. */
  revokeSession(sessionKey: string): void;
  revokeAll(): void;
  /** Live (unexpired, unrevoked) tokens, after sweeping. */
  readonly size: number;
}

const SWEEP_EVERY_MS = 1000;

const keyOf = (token: string) => createHash('sha256').update(token).digest('hex');

interface Entry {
  binding: TokenBinding;
  ended: AbortController;
}

export function createTokenTable(now: () => number = () => performance.now()): TokenTable {
  const tokens = new Map<string, Entry>();
  let lastSweep = -Infinity;

  function end(key: string, e: Entry, why: string): void {
    tokens.delete(key);
    e.ended.abort(new Error(why));
  }

  function sweep(force = false): void {
    const t = now();
    if (!force && t - lastSweep < SWEEP_EVERY_MS) return;
    lastSweep = t;
    for (const [k, e] of tokens) if (e.binding.expires < t) end(k, e, 'the token expired');
  }

  return {
    mint({ profile, sessionKey, turnId, ttlMs }) {
      sweep();
      const token = randomBytes(32).toString('base64url');
      const key = keyOf(token);
      const ended = new AbortController();
      const binding: TokenBinding = { profile, sessionKey, turnId, expires: now() + ttlMs, signal: ended.signal };
      const entry: Entry = { binding, ended };
      tokens.set(key, entry);
      return {
        token,
        binding,
        release() {
          if (tokens.get(key) === entry) end(key, entry, 'the turn ended');
        },
      };
    },
    lookup(token) {
      const key = keyOf(token);
      const e = tokens.get(key);
      if (e && e.binding.expires < now()) {
        end(key, e, 'the token expired');
        return undefined;
      }
      return e?.binding;
    },
    revokeSession(sessionKey) {
      for (const [k, e] of tokens) if (e.binding.sessionKey === sessionKey) end(k, e, 'the session was revoked');
    },
    revokeAll() {
      for (const [k, e] of tokens) end(k, e, 'every token was revoked');
    },
    get size() {
      sweep(true);
      return tokens.size;
    },
  };
}
