/**
 * A canary's bookkeeping: each turn it serves counts (a healthy one toward promotion, a failed one
 * ends it); promotion makes the canary's slot the active one, keeping the old release stopped in
 * the other slot; a failure (or `release rollback` during the canary) leaves the active release
 * as it was. Both are audited. Called by the gateway's slotted link (turns) and the release
 * service (rollback); the slots row's version keeps concurrent turns from losing a count.
 */
import { isAgentVmError } from '../errors.js';
import type { AuditLog } from '../governance/audit.js';
import type { Logger } from '../log.js';
import type { ReleaseRepo, SlotsRow } from '../store/releases.js';
import { printable } from '../text.js';
import { canaryOf } from './spec.js';
import type { CanaryState } from './types.js';

export interface CanaryDeps {
  repo: ReleaseRepo;
  audit: AuditLog;
  logger: Logger;
}

const state = (row: SlotsRow, canary: CanaryState | null) => ({ active: row.active, release: row.release, standby: row.standby, canary, containers: row.containers });

/** Retries a read-modify-write of the slots row when another writer got there first. */
async function withRow<T>(d: CanaryDeps, agent: string, fn: (row: SlotsRow | undefined) => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn(await d.repo.slots(agent));
    } catch (err) {
      if (!isAgentVmError(err, 'slots_conflict') || i >= 8) throw err;
    }
  }
}

/** One turn served by the canary `release`: healthy (`ok`) or not (`why`). Returns what became of the canary. */
export async function canaryTurn(d: CanaryDeps, agent: string, release: string, ok: boolean, why?: string): Promise<CanaryState['state'] | undefined> {
  return withRow(d, agent, async (row) => {
    const c = canaryOf(row);
    if (!row || !c || c.release !== release) return undefined;
    if (!ok) {
      await endCanary(d, row, c, `a turn on the canary failed: ${why ?? 'unknown'}`, 'gateway');
      return 'rolled_back';
    }
    const next: CanaryState = { ...c, ok: c.ok + 1 };
    if (next.ok < c.needed) {
      await d.repo.putSlots(agent, state(row, next), row.version);
      return 'serving';
    }
    const promoted: CanaryState = { ...next, state: 'promoted' };
    await d.repo.putSlots(agent, { ...state(row, null), active: c.slot, release: c.release, standby: row.release }, row.version);
    await d.repo.update(c.release, { status: 'active', outcome: { canary: promoted } });
    if (row.release) await d.repo.update(row.release, { status: 'superseded', outcome: { why: `superseded by ${c.release} (canary promoted after ${next.ok} healthy turns)` } });
    await d.audit.record({ profile: agent, action: 'release.canary', decision: 'promoted', subject: c.release, data: { turns: next.ok, slot: c.slot, replaced: row.release } });
    d.logger.info({ agent, release: c.release, turns: next.ok }, 'canary promoted');
    return 'promoted';
  });
}

/** Ends a serving canary without promoting it: the active release stays, the canary's release is rolled back. */
export async function endCanary(d: CanaryDeps, row: SlotsRow, c: CanaryState, why: string, who: string): Promise<void> {
  const ended: CanaryState = { ...c, state: 'rolled_back', why: printable(why, 500) };
  await d.repo.putSlots(row.agent, state(row, null), row.version);
  await d.repo.update(c.release, { status: 'rolled_back', outcome: { canary: ended, why: ended.why, rolledBackBy: who } });
  await d.audit.record({ profile: row.agent, action: 'release.canary', decision: 'rolled_back', subject: c.release, reason: ended.why, data: { turns: c.ok, slot: c.slot, by: who } });
  d.logger.warn({ agent: row.agent, release: c.release, why }, 'canary rolled back');
}

/** `release rollback` while a canary serves: ends it (see endCanary), retried on a concurrent turn's write. */
export function abortCanary(d: CanaryDeps, agent: string, why: string, who: string): Promise<CanaryState | undefined> {
  return withRow(d, agent, async (row) => {
    const c = canaryOf(row);
    if (!row || !c) return undefined;
    await endCanary(d, row, c, why, who);
    return c;
  });
}
