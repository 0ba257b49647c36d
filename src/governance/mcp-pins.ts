/**
 * Tool definition pins: the hash of each allowed tool's name, description and input schema, taken
 * the first time the gateway sees the tool for a profile (registering the profile is approving it).
 * A later definition with another hash is hidden and denied ("quarantined") until a person re-pins
 * it: `agent-vm tools repin`, `POST /v1/pins/<profile>/<server.tool>/repin`, or `McpProxy.repin`.
 * The pinned definition is stored beside its hash, and the quarantined one beside it, so the
 * person sees what changed (`definitionDiff`) before accepting it.
 *
 * A re-pin is a database change: a running proxy that sees a mismatch re-reads the pin (at most
 * once a second per tool) and serves the tool again once it matches, without a restart.
 *
 * Deliberately left out: pin history (the audit trail has every pin, mismatch and re-pin).
 */
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError } from '../errors.js';
import type { PinRepo, PinRow } from '../store/pins.js';
import { storableDeep } from '../text.js';
import { canonicalJson, hashOf, type AuditLog } from './audit.js';

export type { PinRepo, PinRow } from '../store/pins.js';

type Covered = Pick<Tool, 'name' | 'description' | 'inputSchema'>;

/** What a pin covers. Annotations, title and output schema are not part of it and never reach the agent. */
export function definitionHash(def: Covered): string {
  return hashOf(coveredPart(def));
}

function coveredPart(def: Covered): Record<string, unknown> {
  return { name: def.name, description: def.description ?? null, inputSchema: def.inputSchema ?? null };
}

/**
 * The covered part of a definition as stored beside its hash, for people to read. Made storable
 * (a tool server is outside the gateway): the hash, not this copy, is what decides.
 */
export function storedDefinition(def: Covered): unknown {
  return storableDeep(coveredPart(def), { maxString: 16 * 1024, maxDepth: 24, maxEntries: 1024 });
}

const MAX_DIFF_LINES = 2000;

function lines(def: unknown): string[] {
  if (def === null || def === undefined) return [];
  // Canonical key order first, so a reordered schema is no difference.
  return JSON.stringify(JSON.parse(canonicalJson(def)), null, 2).split('\n').slice(0, MAX_DIFF_LINES);
}

/**
 * A line diff of two stored definitions (pretty JSON, keys sorted): `  ` unchanged, `- ` only in
 * the pin, `+ ` only in the new one. Lines are raw JSON text: escape them (printable) for a terminal.
 */
export function definitionDiff(pinned: unknown, seen: unknown): string[] {
  const a = lines(pinned);
  const b = lines(seen);
  // Longest common subsequence, suffix table: definitions are small (capped above).
  const w = b.length + 1;
  const lcs = new Uint32Array((a.length + 1) * w);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i * w + j] = a[i] === b[j] ? lcs[(i + 1) * w + j + 1]! + 1 : Math.max(lcs[(i + 1) * w + j]!, lcs[i * w + j + 1]!);
    }
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) out.push(`  ${a[i++]}`), j++;
    else if (j < b.length && (i >= a.length || lcs[i * w + j + 1]! >= lcs[(i + 1) * w + j]!)) out.push(`+ ${b[j++]}`);
    else out.push(`- ${a[i++]}`);
  }
  return out;
}

/** A pin as operators see it (CLI, operator API). */
export interface PinView {
  profile: string;
  tool: string;
  /** `quarantined`: a differing definition was seen; the tool is hidden and denied until re-pinned. */
  state: 'pinned' | 'quarantined';
  hash: string;
  pinnedAt: string;
  pinnedBy: string | null;
  seen: { hash: string; at: string | null } | null;
  /** Only for quarantined pins: pinned → seen (see definitionDiff). Empty when the pin predates stored definitions. */
  diff: string[];
}

export function pinView(r: PinRow): PinView {
  const quarantined = r.seenHash !== null && r.seenHash !== r.hash;
  return {
    profile: r.profile,
    tool: r.tool,
    state: quarantined ? 'quarantined' : 'pinned',
    hash: r.hash,
    pinnedAt: r.pinnedAt.toISOString(),
    pinnedBy: r.pinnedBy,
    seen: quarantined ? { hash: r.seenHash!, at: r.seenAt ? r.seenAt.toISOString() : null } : null,
    diff: quarantined && r.definition !== null ? definitionDiff(r.definition, r.seenDefinition) : [],
  };
}

/**
 * Accepts the quarantined definition of `tool` as its pin, as `by`, and audits it (`tool.pin`,
 * "re-pinned by <by>"). `expectedHash` (the seen hash the person reviewed) guards against a
 * definition that changed again meanwhile. Throws AgentVmError 'pin_not_found' (404) or
 * 'pin_not_quarantined' (409).
 */
export async function repinQuarantined(
  d: { pins: PinRepo; audit: AuditLog },
  profile: string,
  tool: string,
  by: string,
  expectedHash?: string,
): Promise<PinView> {
  const before = await d.pins.get(profile, tool);
  if (!before) throw new AgentVmError('pin_not_found', `no pin for ${tool} in profile ${profile}; see agent-vm tools pins ${profile}`, { status: 404 });
  const after = await d.pins.acceptSeen(profile, tool, by, expectedHash);
  if (!after) {
    const why = before.seenHash === null ? 'its definition has not changed since it was pinned' : 'its quarantined definition changed again; review it and retry';
    throw new AgentVmError('pin_not_quarantined', `nothing to re-pin for ${tool} in profile ${profile}: ${why}`, { status: 409 });
  }
  try {
    await d.audit.record({ profile, action: 'tool.pin', decision: 'ok', subject: tool, reason: `re-pinned by ${by}`, data: { by, from: before.hash, definitionHash: after.hash } });
  } catch (err) {
    // No re-pin without its row: put the old pin and the quarantine back.
    await d.pins.replace(profile, [{ tool, hash: before.hash, definition: before.definition }], before.pinnedBy);
    await d.pins.noteSeen(profile, tool, after.hash, after.definition);
    throw new AgentVmError('audit_unavailable', `${tool} was not re-pinned: the audit trail is unavailable; retry when the database is healthy`, { status: 503, cause: err });
  }
  return pinView(after);
}
