/**
 * The relay's token book: which token belongs to which (profile, provider) binding, which turns
 * are open, and which calls are in flight, so that ending a profile's last turn or revoking a
 * token cuts them at once. Tokens are kept only as SHA-256 hashes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { AgentVmError } from '../../errors.js';
import type { ModelBinding, ModelProvider } from './types.js';

export interface Entry {
  hash: string;
  /** Kept to hand the same token out again (issue is idempotent); looked up only by hash. */
  token: string;
  binding: Omit<ModelBinding, 'token'> & { allow: readonly string[] };
  /** The secret's store name (after `secret://`). */
  keyName: string;
}

export type CheckResult =
  | { ok: true; entry: Entry; turnIds: string[] }
  | { ok: false; reason: 'missing' | 'unknown' | 'revoked' | 'no_turn' | 'wrong_provider' | 'conflicting'; profile?: string };

/** Something in flight that can be stopped at once (the client's socket and the upstream request). */
export type Cut = () => void;

const TOKEN_SHAPE = /^[A-Za-z0-9_-]{32,256}$/;
const KEY_REF = /^secret:\/\/([A-Za-z0-9_.-]+)$/;
/** How many revoked hashes are remembered, to answer `revoked` rather than `unknown` (audit only). */
const REMEMBER_REVOKED = 4096;

const hashOf = (token: string) => createHash('sha256').update(token).digest('hex');

export function newToken(): string {
  return `avmr_${randomBytes(32).toString('base64url')}`;
}

export class TokenBook {
  private readonly byHash = new Map<string, Entry>();
  private readonly byBinding = new Map<string, string>();
  private readonly revoked = new Map<string, string>();
  private readonly turns = new Map<string, string>();
  private readonly openTurns = new Map<string, Set<string>>();
  private readonly inflight = new Map<string, Set<Cut>>();

  /** Returns the token to hand out: the caller's, the binding's existing one, or a new one. */
  issue(b: ModelBinding): string {
    const keyName = KEY_REF.exec(b.key)?.[1];
    if (keyName === undefined) {
      throw new AgentVmError('model_relay_key_invalid', `the ${b.provider} key of profile ${b.profile} must be a secret://NAME reference`, { status: 400 });
    }
    if (b.token !== undefined && !TOKEN_SHAPE.test(b.token)) {
      throw new AgentVmError('model_relay_token_invalid', 'a relay token must be 32-256 characters of A-Z, a-z, 0-9, _ and -', { status: 400 });
    }
    if (b.dailyTokens !== undefined && !(Number.isInteger(b.dailyTokens) && b.dailyTokens > 0)) {
      throw new AgentVmError('model_relay_budget_invalid', `dailyTokens of profile ${b.profile} (${b.provider}) must be a positive integer`, { status: 400 });
    }
    const bindingKey = `${b.profile}\u0000${b.provider}`;
    const existingHash = this.byBinding.get(bindingKey);
    const existing = existingHash === undefined ? undefined : this.byHash.get(existingHash);
    const token = b.token ?? existing?.token ?? newToken();
    const hash = hashOf(token);
    const other = this.byHash.get(hash);
    if (other && other !== existing) {
      throw new AgentVmError('model_relay_token_reused', 'this relay token is already bound to another profile or provider', { status: 400 });
    }
    if (existing && existing.hash !== hash) this.revokeHash(existing.hash);
    const { token: _token, ...binding } = b;
    this.byHash.set(hash, { hash, token, keyName, binding: { ...binding, allow: Object.freeze([...b.allow]) } });
    this.byBinding.set(bindingKey, hash);
    this.revoked.delete(hash);
    return token;
  }

  check(provider: ModelProvider, presented: string[]): CheckResult {
    if (presented.length === 0) return { ok: false, reason: 'missing' };
    if (presented.some((p) => p !== presented[0])) return { ok: false, reason: 'conflicting' };
    const hash = hashOf(presented[0]!);
    const entry = this.byHash.get(hash);
    if (!entry) {
      const profile = this.revoked.get(hash);
      return profile === undefined ? { ok: false, reason: 'unknown' } : { ok: false, reason: 'revoked', profile };
    }
    if (entry.binding.provider !== provider) return { ok: false, reason: 'wrong_provider', profile: entry.binding.profile };
    const open = this.openTurns.get(entry.binding.profile);
    if (!open || open.size === 0) return { ok: false, reason: 'no_turn', profile: entry.binding.profile };
    return { ok: true, entry, turnIds: [...open] };
  }

  /** Still honoured? Checked again before the upstream call (a turn may have ended meanwhile). */
  honoured(entry: Entry): boolean {
    return this.byHash.has(entry.hash) && (this.openTurns.get(entry.binding.profile)?.size ?? 0) > 0;
  }

  beginTurn(profile: string, turnId: string): void {
    const owner = this.turns.get(turnId);
    if (owner !== undefined && owner !== profile) {
      throw new AgentVmError('model_relay_turn_conflict', `turn ${turnId} is already open for another profile`, { status: 409 });
    }
    this.turns.set(turnId, profile);
    let open = this.openTurns.get(profile);
    if (!open) this.openTurns.set(profile, (open = new Set()));
    open.add(turnId);
  }

  endTurn(turnId: string): void {
    const profile = this.turns.get(turnId);
    if (profile === undefined) return;
    this.turns.delete(turnId);
    const open = this.openTurns.get(profile);
    open?.delete(turnId);
    if (open && open.size > 0) return;
    this.openTurns.delete(profile);
    for (const entry of this.byHash.values()) if (entry.binding.profile === profile) this.cutAll(entry.hash);
  }

  revoke(token: string): void {
    this.revokeHash(hashOf(token));
  }

  private revokeHash(hash: string): void {
    const entry = this.byHash.get(hash);
    if (!entry) return;
    this.byHash.delete(hash);
    const bindingKey = `${entry.binding.profile}\u0000${entry.binding.provider}`;
    if (this.byBinding.get(bindingKey) === hash) this.byBinding.delete(bindingKey);
    this.revoked.set(hash, entry.binding.profile);
    if (this.revoked.size > REMEMBER_REVOKED) this.revoked.delete(this.revoked.keys().next().value!);
    this.cutAll(hash);
  }

  /** Registers a call in flight; the returned function unregisters it. */
  track(entry: Entry, cut: Cut): () => void {
    let set = this.inflight.get(entry.hash);
    if (!set) this.inflight.set(entry.hash, (set = new Set()));
    set.add(cut);
    return () => {
      set.delete(cut);
      if (set.size === 0 && this.inflight.get(entry.hash) === set) this.inflight.delete(entry.hash);
    };
  }

  private cutAll(hash: string): void {
    const set = this.inflight.get(hash);
    if (!set) return;
    this.inflight.delete(hash);
    for (const cut of set) cut();
  }

  cutEverything(): void {
    for (const hash of [...this.inflight.keys()]) this.cutAll(hash);
  }
}
