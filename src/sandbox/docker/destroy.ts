/**
 * Destroying an agent on the Docker engine: every container labelled for it (both slots, a
 * trial, strays of an interrupted create), its workspace and trial volumes, its network and the
 * network's firewall chain; then a check that nothing labelled for it is left.
 */
import { AgentVmError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { DestroyReport, SnapshotInfo } from '../types.js';
import { isNotFound, type DockerClient } from './engine.js';
import { bridgeName, chainFor, chainInstalled, unguardBridge } from './firewall.js';
import { LABELS } from './hardening.js';
import { slotNames } from './slots.js';

export interface DestroyDeps {
  docker: DockerClient;
  call: <T>(fn: () => Promise<T>) => Promise<T>;
  prefix: string;
  log: Logger;
  bridgeOf: (agentId: string) => Promise<string>;
}

export async function destroyAgent(d: DestroyDeps, agentId: string, finalSnapshot: SnapshotInfo | null): Promise<DestroyReport> {
  const { docker, call } = d;
  const n = slotNames(d.prefix, agentId, 'a');
  const filter = { label: [`${LABELS.agent}=${agentId}`] };
  const removed = { containers: 0, volumes: 0, networks: 0 };
  const ignore404 = (err: unknown) => {
    if (!isNotFound(err)) throw err;
  };
  // By label, so strays from an interrupted create are removed too; then by name.
  const containers = await call(() => docker.listContainers({ all: true, filters: filter }));
  for (const c of containers) {
    await call(() => docker.getContainer(c.Id).remove({ force: true, v: false })).then(() => removed.containers++, ignore404);
  }
  for (const slot of ['a', 'b', 'trial'] as const) {
    await call(() => docker.getContainer(slotNames(d.prefix, agentId, slot).container).remove({ force: true })).then(() => removed.containers++, ignore404);
  }
  await call(() => docker.getVolume(n.volume).remove()).then(() => removed.volumes++, ignore404);
  // A trial's workspace is a copy, not the agent's: removed, not counted.
  await call(() => docker.getVolume(slotNames(d.prefix, agentId, 'trial').volume).remove()).catch(ignore404);
  // Our own bridge name when the network is gone already (a retried destroy): its chain may not be.
  const bridge = await d.bridgeOf(agentId).catch(() => bridgeName(d.prefix, agentId));
  await call(() => docker.getNetwork(n.network).remove()).then(() => removed.networks++, ignore404);
  await unguardBridge(bridge).catch((err: unknown) => {
    if (!isAgentVmError(err, 'firewall_unavailable')) throw err;
  });

  const [c, v, nw] = await Promise.all([
    call(() => docker.listContainers({ all: true, filters: filter })),
    call(() => docker.listVolumes({ filters: filter })),
    call(() => docker.listNetworks({ filters: filter })),
  ]);
  const left = [
    ...c.map((x) => `container ${x.Id.slice(0, 12)}`),
    ...(v.Volumes ?? []).map((x) => `volume ${x.Name}`),
    ...nw.map((x) => `network ${x.Name}`),
    ...((await chainInstalled(bridge)) ? [`firewall chain ${chainFor(bridge)}`] : []),
  ];
  if (left.length > 0) {
    throw new AgentVmError('destroy_incomplete', `agent ${agentId} still has ${left.join(', ')} after destroy`, { status: 500 });
  }
  d.log.info({ agent: agentId, removed, finalSnapshot: finalSnapshot?.generation ?? null }, 'sandbox destroyed');
  return { agentId, removed, finalSnapshot };
}
