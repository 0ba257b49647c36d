import { createHash } from 'node:crypto';
import { z } from 'zod';
import { AgentVmError } from '../errors.js';
import type { SandboxSpec } from './types.js';

export const AGENT_ID_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export const RUNTIME_SETTINGS = ['kata', 'runsc', 'runc', 'auto'] as const;

/** The only labels a spec may add (`SandboxSpec.labels`): never the driver's own. */
export const RELEASE_LABEL = /^agent-vm\.release(-[a-z]{1,20})?$/;

/** What a sandbox may ask for; profiles are checked against the same bounds. */
export const LIMIT_BOUNDS = Object.freeze({
  cpus: { max: 64 },
  memoryMiB: { min: 16, max: 262_144 },
  pids: { min: 8, max: 65_536 },
});

const specSchema = z.object({
  agentId: z.string().regex(AGENT_ID_PATTERN, 'lowercase letters, digits, "-", "_", "." (max 63), starting with a letter or digit'),
  image: z.string().min(1),
  command: z.array(z.string()).min(1).optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).optional(),
  runtime: z.enum(RUNTIME_SETTINGS).optional(),
  limits: z.object({
    cpus: z.number().positive().max(LIMIT_BOUNDS.cpus.max),
    memoryMiB: z.number().int().min(LIMIT_BOUNDS.memoryMiB.min).max(LIMIT_BOUNDS.memoryMiB.max),
    pids: z.number().int().min(LIMIT_BOUNDS.pids.min).max(LIMIT_BOUNDS.pids.max),
  }),
  network: z.discriminatedUnion('mode', [z.object({ mode: z.literal('none') }), z.object({ mode: z.literal('internal'), hostPorts: z.array(z.number().int().min(1).max(65535)).max(16).optional(), proxyPort: z.number().int().min(1).max(65535).optional() })]).optional(),
  stdin: z.boolean().optional(),
  slot: z.enum(['a', 'b', 'trial']).optional(),
  labels: z.record(z.string().regex(RELEASE_LABEL, 'only agent-vm.release… labels'), z.string().regex(/^[\x20-\x7e]{0,200}$/, 'printable ASCII, at most 200 characters')).optional(),
});

export function validateSpec(spec: SandboxSpec): SandboxSpec {
  const r = specSchema.safeParse(spec);
  if (!r.success) {
    const why = r.error.issues.map((i) => `${i.path.join('.') || 'spec'}: ${i.message}`).join('; ');
    throw new AgentVmError('spec_invalid', `invalid sandbox spec: ${why}`, { status: 400 });
  }
  return r.data as SandboxSpec;
}

export function assertAgentId(agentId: string): void {
  if (!AGENT_ID_PATTERN.test(agentId)) {
    throw new AgentVmError('agent_id_invalid', `invalid agent id ${JSON.stringify(agentId)}`, { status: 400 });
  }
}

/** JSON with object keys sorted, so equal values always hash the same. */
export function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function hashOf(value: unknown): string {
  return createHash('sha256').update(stableStringify(value)).digest('hex');
}

/** Limits for a sandbox whose profile names none. */
export const DEFAULT_LIMITS = Object.freeze({ cpus: 1, memoryMiB: 512, pids: 256 });
