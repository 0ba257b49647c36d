/**
 * An agent's internal network on the Docker engine: created on demand with our own bridge name
 * (so the host firewall chain can name the interface), its gateway address (where the gateway's
 * endpoints for the agent listen), and the firewall guard installed before a sandbox runs on it.
 * Shared by all of an agent's slots.
 */
import { AgentVmError } from '../../errors.js';
import type { SandboxSpec } from '../types.js';
import { isConflict, isNotFound, type DockerClient } from './engine.js';
import { bridgeName, guardBridge, hostPortsOf } from './firewall.js';

export function createNetworks(d: {
  docker: DockerClient;
  call: <T>(fn: () => Promise<T>) => Promise<T>;
  prefix: string;
  network: (agentId: string) => string;
  labels: (agentId: string) => Record<string, string>;
}) {
  const { docker, call } = d;
  /** Agent id → its internal network's gateway address (stable for the network's lifetime). */
  const hostAddresses = new Map<string, string>();

  async function ensureNetwork(agentId: string): Promise<string> {
    const name = d.network(agentId);
    try {
      await call(() => docker.getNetwork(name).inspect());
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await call(() =>
          docker.createNetwork({
            Name: name,
            Internal: true,
            CheckDuplicate: true,
            Labels: d.labels(agentId),
            Options: { 'com.docker.network.bridge.name': bridgeName(d.prefix, agentId) },
          }),
        );
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
    }
    return name;
  }

  /** The Linux bridge behind an agent's network (ours, or Docker's `br-<id>` for older networks). */
  async function bridgeOf(agentId: string): Promise<string> {
    const info = (await call(() => docker.getNetwork(d.network(agentId)).inspect())) as { Id: string; Options?: Record<string, string> };
    return info.Options?.['com.docker.network.bridge.name'] ?? `br-${info.Id.slice(0, 12)}`;
  }

  async function hostAddress(agentId: string): Promise<string> {
    const cached = hostAddresses.get(agentId);
    if (cached) return cached;
    const info = await call(() => docker.getNetwork(d.network(agentId)).inspect());
    const gateway = (info as { IPAM?: { Config?: Array<{ Gateway?: string }> } }).IPAM?.Config?.find((c) => c.Gateway)?.Gateway;
    if (!gateway) throw new AgentVmError('network_no_gateway', `agent ${agentId}'s network has no gateway address`, { status: 500 });
    hostAddresses.set(agentId, gateway);
    return gateway;
  }

  /** Closes the host to the sandbox except the spec's ports; before the container runs. */
  async function guard(spec: SandboxSpec): Promise<void> {
    if (spec.network?.mode !== 'internal') return;
    await guardBridge(await bridgeOf(spec.agentId), await hostAddress(spec.agentId), hostPortsOf(spec));
  }

  return { ensureNetwork, bridgeOf, hostAddress, guard, forget: (agentId: string) => hostAddresses.delete(agentId) };
}
