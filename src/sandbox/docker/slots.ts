/**
 * Slots on the Docker engine: names, labels and which slot is an agent's current one.
 *
 * Slot a keeps the name every agent had before slots (`agentvm-<agent>`), so existing sandboxes
 * are slot a. Slot b is `agentvm-<agent>.b` and the trial `agentvm-<agent>.trial`, with its own
 * volume `agentvm-<agent>.trial-workspace`: profile ids (the agents that have slots) cannot
 * contain '.', so no agent's own names can be another agent's slot.
 */
import { RELEASE_LABEL } from '../spec.js';
import type { SlotName, SlotRef } from '../types.js';
import type { ContainerInspectInfo } from './engine.js';
import { LABELS } from './hardening.js';

export interface SlotNames {
  container: string;
  /** The workspace this slot mounts: the agent's, or the trial's own. */
  volume: string;
  network: string;
}

export function slotNames(prefix: string, agentId: string, slot: SlotRef = 'a'): SlotNames {
  const base = `${prefix}-${agentId}`;
  return {
    container: slot === 'a' ? base : `${base}.${slot}`,
    volume: slot === 'trial' ? `${base}.trial-workspace` : `${base}-workspace`,
    network: `${base}-net`,
  };
}

/** The slot a container says it is; containers made before slots (no label) are slot a. */
export function slotOf(info: ContainerInspectInfo): SlotRef {
  const v = info.Config.Labels?.[LABELS.slot];
  return v === 'b' || v === 'trial' ? v : 'a';
}

const NEVER = '0001-01-01T00:00:00Z';
const startedAt = (i: ContainerInspectInfo): string => (i.State.StartedAt && !i.State.StartedAt.startsWith('0001-') ? i.State.StartedAt : NEVER);

/**
 * The agent's current slot among its a and b containers: a running (or paused) one, the one
 * started last if both run (a canary) or none runs; slot a when neither has ever started.
 */
export function pickCurrent(slots: Array<{ slot: SlotName; info: ContainerInspectInfo | undefined }>): { slot: SlotName; info: ContainerInspectInfo | undefined } {
  const existing = slots.filter((s): s is { slot: SlotName; info: ContainerInspectInfo } => s.info !== undefined);
  const running = existing.filter((s) => s.info.State.Running);
  const pool = running.length > 0 ? running : existing;
  const best = [...pool].sort((x, y) => (startedAt(y.info) > startedAt(x.info) ? 1 : startedAt(y.info) < startedAt(x.info) ? -1 : x.slot < y.slot ? -1 : 1))[0];
  return best ?? { slot: 'a', info: undefined };
}

/** The container's `agent-vm.release…` labels. */
export function releaseLabels(info: ContainerInspectInfo): Record<string, string> {
  return Object.fromEntries(Object.entries(info.Config.Labels ?? {}).filter(([k]) => RELEASE_LABEL.test(k)));
}

export function startedIso(info: ContainerInspectInfo): string | undefined {
  const s = startedAt(info);
  return s === NEVER ? undefined : s;
}
