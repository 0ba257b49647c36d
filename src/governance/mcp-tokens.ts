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
 * A token can also be suspended between turns and resumed for the next one (`suspend`/`resume`):
 * an agent keeps the MCP server it was given when its session started, so the gateway keeps one
 * token per session and connection, honoured only while a turn of it runs. A suspended token is
 * refused (401) like a revoked one, and suspending aborts the calls running in its name.
 *
 * Deliberately left out: persistence. Tokens die with the process, which is what a restarted
 * gateway wants (the agent gets a fresh token with its next turn).
 */
import { createHash, randomBytes } from 'node:crypto';

export interface TokenBinding {
  profile: string;
  sessionKey: string;
  /** The turn the token is honoured for now, when the caller named one: in every audit row it authorises. */
  turnId: string | undefined;
  /** performance.now() after which the token is refused (until resumed). */
  expires: number;
  /** Aborted when the token ends or is suspended (the turn it was honoured for ended). */
  signal: AbortSignal;
}

export interface MintedToken {
  token: string;
  binding: TokenBinding;
  /** Revokes this token now. Idempotent. */
  release(): void;
  /** Refuses it until `resume` (the turn ended); aborts calls running in its name. */
  suspend(): void;
  /** Honours it again for `turnId` for at most `ttlMs`. False when it was revoked meanwhile. */
  resume(turn: { turnId?: string; ttlMs: number }): boolean;
}

export interface TokenTable {
  /** `ttlMs`: honoured for this long now; `lifetimeMs` (default ttlMs): how long it may be resumed. */
  mint(b: { profile: string; sessionKey: string; turnId?: string; ttlMs: number; lifetimeMs?: number }): MintedToken;
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
  /** Aborted on suspend; replaced on resume. */
  turn: AbortController;
  /** Kept while suspended, so a suspended token is not swept as expired. */
  lifetime: number;
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
    for (const [k, e] of tokens) if (e.lifetime < t) end(k, e, 'the token expired');
  }

  return {
    mint({ profile, sessionKey, turnId, ttlMs, lifetimeMs }) {
      sweep();
      const token = randomBytes(32).toString('base64url');
      const key = keyOf(token);
      const ended = new AbortController();
      const turn = new AbortController();
      const binding: TokenBinding = { profile, sessionKey, turnId, expires: now() + ttlMs, signal: AbortSignal.any([ended.signal, turn.signal]) };
      const entry: Entry = { binding, ended, turn, lifetime: now() + (lifetimeMs ?? ttlMs) };
      tokens.set(key, entry);
      return {
        token,
        binding,
        release() {
          if (tokens.get(key) === entry) end(key, entry, 'the turn ended');
        },
        suspend() {
          if (tokens.get(key) !== entry) return;
          binding.expires = -Infinity;
          binding.turnId = undefined;
          entry.turn.abort(new Error('the turn ended'));
        },
        resume(t) {
          if (tokens.get(key) !== entry) return false;
          entry.turn = new AbortController();
          binding.signal = AbortSignal.any([ended.signal, entry.turn.signal]);
          binding.turnId = t.turnId;
          binding.expires = Math.min(now() + t.ttlMs, entry.lifetime);
          return true;
        },
      };
    },
    lookup(token) {
      const key = keyOf(token);
      const e = tokens.get(key);
      if (e && e.lifetime < now()) {
        end(key, e, 'the token expired');
        return undefined;
      }
      // Suspended (between turns) or past its turn's deadline: refused, but kept for the next turn.
      if (e && e.binding.expires < now()) return undefined;
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
