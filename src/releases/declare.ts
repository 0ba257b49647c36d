/**
 * What a profile would run if it were released now (`Declared`): its manifest's sandbox spec with
 * the image resolved to the engine's id, the agent program and version from the image's labels,
 * and the hashes a plan compares. Reads the engine (image inspect) and changes nothing.
 */
import { AgentVmError } from '../errors.js';
import { hashOf } from '../governance/audit.js';
import { PROVIDERS } from '../governance/model-relay/providers.js';
import type { Profile } from '../governance/profile.js';
import { runtimeForTier } from '../governance/tiers.js';
import { sandboxSpecFor } from '../gateway/spec.js';
import type { RuntimeSetting, SandboxDriver } from '../sandbox/types.js';
import type { Declared, SpecTemplate } from './types.js';

export interface DeclareDeps {
  driver: Pick<SandboxDriver, 'inspectImage'>;
  /** AGENTVM_IMAGE: the image of agents without a preset image or a manifest `image`. */
  image: string;
  /** AGENTVM_RUNTIME: the runtime of manifests that name none. */
  runtime: RuntimeSetting;
}

/** Image labels that say an agent's version, most specific first. */
const VERSION_LABELS = ['agent-vm.preset-version', 'agent-vm.agent-version', 'org.opencontainers.image.version'];
const RELAY_PLACEHOLDER = 'http://model-relay';

/** The model relay's variables for the profile's providers, with stand-in values (the relay fills them at wake). */
function relayStandIns(profile: Profile): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of profile.models) Object.assign(env, PROVIDERS[m.provider].env(RELAY_PLACEHOLDER, 'model-relay-token'));
  return env;
}

export async function declare(profile: Profile, d: DeclareDeps): Promise<Declared> {
  const runtime = runtimeForTier(profile.risk, profile.runtime, d.runtime);
  const standIns = relayStandIns(profile);
  const spec = sandboxSpecFor(profile, d.image, runtime, Object.keys(standIns).length > 0 ? standIns : undefined);
  const img = await d.driver.inspectImage(spec.image);
  if (!img) {
    throw new AgentVmError('image_missing', `profile ${profile.id}: image ${spec.image} is not on the Docker engine; build it (agent-vm image build${profile.agent.preset && profile.agent.preset !== 'reference' ? ` --agents ${profile.agent.preset}` : ''}) and plan again`, { status: 400 });
  }
  const relayKeys = Object.keys(standIns).filter((k) => spec.env?.[k] !== undefined).sort();
  const env = { ...spec.env };
  for (const k of relayKeys) env[k] = '';
  const { slot: _slot, labels: _labels, ...rest } = spec;
  const template: SpecTemplate = { ...rest, image: img.id, env, ...(relayKeys.length > 0 ? { relayKeys } : {}) };
  const version = VERSION_LABELS.map((l) => img.labels[l]).find((v) => typeof v === 'string' && v.length > 0) ?? null;
  return {
    profile: profile.id,
    risk: profile.risk,
    imageRef: spec.image,
    imageDigest: img.id,
    agentProgram: profile.agent.preset ? `preset:${profile.agent.preset}` : (profile.agent.command ?? []).join(' '),
    agentVersion: version ? version.slice(0, 100) : null,
    manifestHash: hashOf(profile),
    manifest: profile,
    runtime,
    spec: template,
    specHash: hashOf(template),
  };
}

/** `a.b[0].c` → JSON value, for every leaf of a manifest. */
function flatten(v: unknown, prefix: string, out: Map<string, string>): Map<string, string> {
  if (Array.isArray(v)) {
    if (v.length === 0) out.set(prefix, '[]');
    v.forEach((x, i) => flatten(x, `${prefix}[${i}]`, out));
  } else if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    if (entries.length === 0 && prefix) out.set(prefix, '{}');
    for (const [k, x] of entries) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, JSON.stringify(v) ?? 'null');
  }
  return out;
}

const short = (s: string | undefined) => (s === undefined ? '(none)' : s.length > 80 ? `${s.slice(0, 77)}...` : s);

/** The manifest's changed leaves, `path: old → new`, sorted; at most `max` lines (the last says how many more). */
export function manifestDiff(before: unknown, after: unknown, max = 40): string[] {
  const a = flatten(before ?? {}, '', new Map());
  const b = flatten(after ?? {}, '', new Map());
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  const lines = keys.filter((k) => a.get(k) !== b.get(k)).map((k) => `${k}: ${short(a.get(k))} → ${short(b.get(k))}`);
  return lines.length > max ? [...lines.slice(0, max - 1), `… and ${lines.length - max + 1} more`] : lines;
}
