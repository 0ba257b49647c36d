/**
 * A profile's sandbox spec: what its agent runs (a preset or its own command), its limits, and
 * its network — none at all, unless the agent has tools, egress or a model: then its own
 * internal network, whose only peers are the gateway's endpoints on the host (ports in layout.ts).
 */
import type { Profile } from '../governance/profile.js';
import { PRESETS, resolvePresetAgent } from '../governance/presets.js';
import { EGRESS_PORT, MCP_PORT, MODEL_RELAY_PORT } from '../sandbox/layout.js';
import type { RuntimeSetting, SandboxSpec } from '../sandbox/types.js';
import { usesEgress } from './egress.js';
import { usesTools } from './tools.js';

/** True when the profile's agent talks to a model through the gateway's model relay. */
export const usesModels = (p: Profile): boolean => p.models.length > 0;

export function sandboxSpecFor(profile: Profile, image: string, runtime?: RuntimeSetting, relayEnv?: Readonly<Record<string, string>>): SandboxSpec {
  const rt = runtime ?? profile.runtime;
  const agent = resolvePresetAgent(profile.agent, { defaultImage: image, ...(profile.image ? { image: profile.image } : {}), ...(relayEnv ? { relayEnv } : {}) });
  // An agent of its own command with `models` gets the relay's variables too (a preset gets its own set above).
  if (!profile.agent.preset && relayEnv) Object.assign(agent.env, relayEnv);
  // A preset's model is the first one its relay binding allows, unless the manifest picks one.
  const preset = profile.agent.preset ? PRESETS[profile.agent.preset] : undefined;
  const model = preset?.provider ? profile.models.find((m) => m.provider === preset.provider)?.allow[0] : undefined;
  if (preset?.modelEnv && model && agent.env[preset.modelEnv] === undefined) agent.env[preset.modelEnv] = model;
  const ports = [...(usesTools(profile) ? [MCP_PORT] : []), ...(usesModels(profile) ? [MODEL_RELAY_PORT] : [])];
  return {
    agentId: profile.id,
    image: agent.image,
    command: agent.command,
    env: agent.env,
    ...(rt ? { runtime: rt } : {}),
    limits: profile.limits,
    network:
      ports.length > 0 || usesEgress(profile)
        ? { mode: 'internal', hostPorts: ports, ...(usesEgress(profile) ? { proxyPort: EGRESS_PORT } : {}) }
        : { mode: 'none' },
    stdin: true,
  };
}
