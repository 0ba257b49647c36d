/**
 * The MCP proxy's per-profile state and the pin checks made on it: which allowed tool is callable
 * right now, pinning tools seen for the first time, hiding (and recording, once) a definition that
 * differs from its pin, and picking up a re-pin made by another process (re-read from the store
 * when a mismatch is seen, at most once per `recheckMs` per tool).
 *
 * Deliberately left out: decisions about calls (mcp-proxy.ts) and what a pin covers (mcp-pins.ts).
 */
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from '../log.js';
import type { PinRepo } from '../store/pins.js';
import type { AuditEntry } from './audit.js';
import { storedDefinition } from './mcp-pins.js';
import type { Upstream } from './mcp-upstreams.js';
import type { CompiledPolicy, PolicyTool } from './policy.js';
import type { Profile } from './profile.js';
import type { Redactor } from './redact.js';

export interface ProfileRuntime {
  profile: Profile;
  policy: CompiledPolicy | undefined;
  policyError: string | undefined;
  upstreams: Map<string, Upstream>;
  /** `<server>.<tool>` → pinned definition hash, as last read. */
  pins: Map<string, string>;
  /** `<ref>` → definition hash already reported as a mismatch, so a mismatch is audited once. */
  reported: Map<string, string>;
  /** `<ref>` → performance.now() of the last re-read of a mismatched pin. */
  rechecked: Map<string, number>;
  /** Pins stored without their definition (taken by an older gateway): filled in when seen to match. */
  undescribed: Set<string>;
}

/** A runtime for a profile whose policy could not be read: it denies everything. */
export function deniedRuntime(profile: Profile, policyError: string): ProfileRuntime {
  return { profile, policy: undefined, policyError, upstreams: new Map(), pins: new Map(), reported: new Map(), rechecked: new Map(), undescribed: new Set() };
}

/** What registration reports about pins. */
export interface PinReport {
  pinned: string[];
  mismatched: string[];
}

export interface PinGuard {
  /** Pins first-seen tools, records mismatches once, picks up re-pins. Throws on store errors (tools stay hidden). */
  check(rt: ProfileRuntime, up: Upstream, report?: PinReport): Promise<void>;
  /** Re-reads a mismatched pin, rate limited; the pin in force, or undefined when not re-read. */
  recheck(rt: ProfileRuntime, ref: string): Promise<string | undefined>;
}

export function createPinGuard(o: { pins: PinRepo; recordLater: (e: AuditEntry) => void; log: Logger; recheckMs: number }): PinGuard {
  const { pins } = o;

  async function recheck(rt: ProfileRuntime, ref: string): Promise<string | undefined> {
    const now = performance.now();
    if (now - (rt.rechecked.get(ref) ?? -Infinity) < o.recheckMs) return undefined;
    rt.rechecked.set(ref, now);
    const row = await pins.get(rt.profile.id, ref);
    if (!row) return undefined;
    rt.pins.set(ref, row.hash);
    return row.hash;
  }

  async function check(rt: ProfileRuntime, up: Upstream, report?: PinReport): Promise<void> {
    const policy = rt.policy;
    if (!policy || !up.tools) return;
    for (const [name, t] of up.tools) {
      const pt = policy.byUpstream(up.server, name);
      if (!pt) continue;
      let pin = rt.pins.get(pt.ref);
      if (pin === undefined) {
        pin = await pins.pinIfAbsent(rt.profile.id, pt.ref, t.hash, storedDefinition(t.def));
        rt.pins.set(pt.ref, pin);
        if (pin === t.hash) {
          report?.pinned.push(pt.ref);
          o.recordLater({ profile: rt.profile.id, action: 'tool.pin', decision: 'ok', subject: pt.ref, data: { policyHash: policy.hash, definitionHash: t.hash } });
        }
      }
      if (pin !== t.hash) pin = (await recheck(rt, pt.ref)) ?? pin;
      if (pin !== t.hash) {
        report?.mismatched.push(pt.ref);
        if (rt.reported.get(pt.ref) !== t.hash) {
          rt.reported.set(pt.ref, t.hash);
          o.log.warn({ profile: rt.profile.id, tool: pt.ref }, 'tool definition changed since it was pinned; hidden until re-pinned');
          o.recordLater({
            profile: rt.profile.id, action: 'tool.pin_mismatch', decision: 'deny', subject: pt.ref,
            reason: 'the tool definition changed since it was pinned; hidden and denied until re-pinned',
            data: { policyHash: policy.hash, pinned: pin, seen: t.hash },
          });
          // Kept for the person who decides: `agent-vm tools pins` shows the difference.
          await pins.noteSeen(rt.profile.id, pt.ref, t.hash, storedDefinition(t.def));
        }
      } else {
        rt.reported.delete(pt.ref);
        if (rt.undescribed.delete(pt.ref)) await pins.fillDefinition(rt.profile.id, pt.ref, t.hash, storedDefinition(t.def));
      }
    }
  }

  return { check, recheck };
}

/** Why a policy tool is not callable right now, or undefined when it is. */
export function hiddenReason(rt: ProfileRuntime, t: PolicyTool): string | undefined {
  const up = rt.upstreams.get(t.server);
  if (!up) return `tool server ${t.server} is not configured`;
  if (!up.tools) return `tool server ${t.server} is unavailable: ${up.reason ?? 'its tools could not be listed'}`;
  const def = up.tools.get(t.tool);
  if (!def) return `tool server ${t.server} does not offer ${t.tool}`;
  const pin = rt.pins.get(t.ref);
  if (pin === undefined) return 'the tool definition is not pinned';
  if (pin !== def.hash) return 'the tool definition changed since it was pinned';
  return undefined;
}

/** Whether the tool is hidden only because its definition differs from its pin. */
export function pinMismatch(rt: ProfileRuntime, t: PolicyTool): boolean {
  const def = rt.upstreams.get(t.server)?.tools?.get(t.tool);
  const pin = rt.pins.get(t.ref);
  return def !== undefined && pin !== undefined && pin !== def.hash;
}

/** A JSON-RPC error whose wire message is exactly `message` (McpError would prefix "MCP error <code>:"). */
export function rpcError(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

export function errorResult(text: string): CallToolResult {
  return { content: [{ type: 'text', text }], isError: true };
}

/** Deep copy of a JSON value with every string redacted. */
export function redactDeep<T>(value: T, redact: Redactor): T {
  if (redact.size === 0) return value;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return redact(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value) as T;
}

/**
 * A signal that aborts when any of `sources` does, and `dispose()` to unhook it. Used instead of
 * AbortSignal.any where a source lives long (a token lives a whole turn): with AbortSignal.any on
 * the token's signal, bench:mcp (Node 20) showed per-call state piling up (undici's abort listeners
 * past 1,500, MaxListenersExceededWarning on every call); with explicit unhooking it does not.
 */
export function linkSignals(sources: AbortSignal[]): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const onAbort = (e: Event) => ac.abort((e.target as AbortSignal).reason);
  for (const s of sources) {
    if (s.aborted) {
      ac.abort(s.reason);
      break;
    }
    s.addEventListener('abort', onAbort, { once: true });
  }
  return {
    signal: ac.signal,
    dispose: () => {
      for (const s of sources) s.removeEventListener('abort', onAbort);
    },
  };
}
