/**
 * Releases: plan, apply, roll back, list. Applying starts the new release in the agent's inactive
 * slot only after it passed its health check on a copy of the workspace (health.ts); the swap
 * itself is one write of the agent's slots row, which the gateway's slotted link reads at the
 * next turn (slotted-link.ts): turns already running finish on the old slot, later ones run on the
 * new one, the old slot is then stopped and kept for an instant swap back.
 *
 * Works from any process (the CLI, the operator API): nothing here needs the gateway running.
 */
import { AgentVmError, describeError } from '../errors.js';
import type { AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { RuntimeSetting, SandboxDriver, SlotName } from '../sandbox/types.js';
import { releaseRepo, type ReleaseRepo, type SlotsRow } from '../store/releases.js';
import type { Store } from '../store/index.js';
import { printable } from '../text.js';
import { abortCanary } from './canary.js';
import { healthCheck } from './health.js';
import { planProfiles } from './plan.js';
import { canaryOf, otherSlot, releaseSpec, RELEASE_ID_LABEL, slotName, toRelease } from './spec.js';
import { RELEASE_SPEC_LABEL, type HealthResult, type PlanItem, type Release } from './types.js';

export interface ReleaseServiceDeps {
  store: Pick<Store, 'db'>;
  driver: SandboxDriver;
  audit: AuditLog;
  logger: Logger;
  /** AGENTVM_IMAGE and AGENTVM_RUNTIME: what a manifest that names none runs. */
  image: string;
  runtime: RuntimeSetting;
  /** The valid manifests (the profiles directory). */
  profiles: () => Promise<Profile[]>;
  /** Why manifests in the directory are invalid (`file: path: message`), named when a profile asked for is not valid. */
  invalid?: () => Promise<string[]>;
  /** Healthy turns a canary serves before it is promoted (AGENTVM_CANARY_TURNS). */
  canaryTurns: number;
}

export interface ApplyOptions {
  who: string;
  why?: string;
  /** Serve the new release to this conversation (or channel: a key prefix) first. */
  canary?: string;
}

export interface ApplyResult {
  profile: string;
  release?: string;
  outcome: 'nothing' | 'swapped' | 'recorded' | 'canary' | 'failed' | 'refused';
  why?: string;
  health?: HealthResult;
  slot?: SlotName;
  /** The release it replaced (the rollback target). */
  replaced?: string;
}

export interface RollbackResult {
  profile: string;
  from: string;
  to: string;
  how: 'swap' | 'recreated' | 'canary';
  ms: number;
}

export interface ReleaseService {
  readonly repo: ReleaseRepo;
  plan(profiles?: string[]): Promise<PlanItem[]>;
  apply(profiles: string[] | undefined, o: ApplyOptions): Promise<ApplyResult[]>;
  rollback(profile: string, o: { who: string; why?: string }): Promise<RollbackResult>;
  list(profile?: string, limit?: number): Promise<Release[]>;
}

/**
 * The trial sandbox's probe uses no model, but an agent may refuse to start without its relay
 * variables (Codex's entrypoint exits on an empty OPENAI_BASE_URL): each gets a placeholder that
 * reaches nothing — an address where nothing listens, a key no relay honours.
 */
const NO_MODEL_URL = 'http://127.0.0.1:9/agent-vm-health-check-has-no-model';
const blankRelay = (r: Release) =>
  Object.fromEntries((r.spec.relayKeys ?? []).map((k) => [k, /_URL$/.test(k) ? NO_MODEL_URL : 'agent-vm-health-check-has-no-model']));

export function createReleaseService(d: ReleaseServiceDeps): ReleaseService {
  const repo = releaseRepo(d.store.db);
  const log = d.logger.child({ component: 'releases' });

  async function selected(ids: string[] | undefined): Promise<Profile[]> {
    const all = await d.profiles();
    if (!ids || ids.length === 0) return all;
    const unknown = ids.filter((id) => !all.some((p) => p.id === id));
    if (unknown.length > 0) {
      const invalid = ((await d.invalid?.()) ?? []).filter((l) => unknown.some((u) => l.includes(u))).slice(0, 5);
      throw new AgentVmError('profile_unknown', `no valid profile ${unknown.map((u) => JSON.stringify(printable(u, 80))).join(', ')}${invalid.length > 0 ? `: ${invalid.map((l) => printable(l, 400)).join('; ')}` : ' (agent-vm profiles validate lists them)'}`, { status: 404 });
    }
    return all.filter((p) => ids.includes(p.id));
  }

  const plan = async (ids?: string[]) => planProfiles(await selected(ids), { repo, driver: d.driver, image: d.image, runtime: d.runtime });

  /** Starts `r` in `slot` (the old container there removed first); left running only when the serving slot runs. */
  async function prepareSlot(r: Release, slot: SlotName, servingSlot: SlotName | undefined): Promise<string | undefined> {
    const view = d.driver.slot(slot);
    await view.discard(r.profile);
    // An agent with a model gets its relay's address and token from the gateway at the first wake.
    if ((r.spec.relayKeys ?? []).length > 0) return undefined;
    const h = await view.ensure(releaseSpec(r, slot));
    const serving = servingSlot ? (await d.driver.slot(servingSlot).status(r.profile)).state : 'missing';
    if (serving !== 'running' && serving !== 'paused') await view.sleep(r.profile);
    return h.containerId;
  }

  async function applyOne(item: PlanItem, o: ApplyOptions): Promise<ApplyResult> {
    const profile = item.profile;
    if (item.error || !item.declared) return { profile, outcome: 'refused', why: item.error ?? 'nothing declared' };
    if (item.changes.length === 0) return { profile, outcome: 'nothing' };
    // A first release has nothing to fall back to: it is health-checked, not canaried.
    if (item.needsCanary && item.current && !o.canary) {
      return { profile, outcome: 'refused', why: `risk ${item.risk}: a release first serves a canary; name its conversation or channel with --canary <channel> (promoted after ${d.canaryTurns} healthy turns, AGENTVM_CANARY_TURNS)` };
    }
    const decl = item.declared;
    const row = await repo.slots(profile);
    const serving = canaryOf(row);
    if (serving) return { profile, outcome: 'refused', why: `the canary of ${serving.release} is still serving (${serving.ok}/${serving.needed} turns); wait for it or run agent-vm release rollback ${profile}` };
    const cur = item.current;
    const active: SlotName = row ? slotName(row.active) : ((await d.driver.status(profile)).slot === 'b' ? 'b' : 'a');
    const target = otherSlot(active);
    if (!cur) delete o.canary;
    const recordOnly = cur !== undefined && !o.canary && item.changes.every((c) => c.what === 'manifest');
    const created = toRelease(
      await repo.create({
        profile, status: 'applying', imageRef: decl.imageRef, imageDigest: decl.imageDigest, agentProgram: decl.agentProgram, agentVersion: decl.agentVersion,
        manifestHash: decl.manifestHash, manifest: decl.manifest, runtime: decl.runtime, specHash: decl.specHash, spec: decl.spec,
        slot: recordOnly ? active : target, rollbackTarget: cur?.id ?? null, createdBy: printable(o.who, 100), reason: o.why ? printable(o.why, 500) : null,
      }),
    );
    const base = { profile, action: 'release.apply', subject: created.id };
    if (recordOnly && row) {
      // Only the gateway-side parts of the manifest changed: the sandbox stays as it is.
      await repo.putSlots(profile, { active: row.active, release: created.id, standby: row.standby, canary: null, containers: row.containers }, row.version);
      await repo.update(created.id, { status: 'active', outcome: { recordOnly: true } });
      await repo.update(cur.id, { status: 'superseded', outcome: { why: `superseded by ${created.id}` } });
      await d.audit.record({ ...base, decision: 'recorded', reason: o.why ?? null, data: { by: o.who, manifestHash: decl.manifestHash, replaced: cur.id } });
      return { profile, release: created.id, outcome: 'recorded', slot: active };
    }
    log.info({ profile, release: created.id }, 'health check on a copy of the workspace');
    const health = await healthCheck(d.driver, releaseSpec(created, 'trial', blankRelay(created)), decl.manifest.health, log);
    if (!health.ok) {
      const why = `health check failed at ${health.failed}: ${health.why ?? 'unknown'}`;
      await repo.update(created.id, { status: 'failed', outcome: { health, why } });
      await d.audit.record({ ...base, decision: 'failed', reason: why, data: { by: o.who, health: { ...health } } });
      return { profile, release: created.id, outcome: 'failed', why, health };
    }
    try {
      const containerId = await prepareSlot(created, target, row || cur ? active : undefined);
      const containers = { ...((row?.containers as Record<string, string> | null) ?? {}), ...(containerId ? { [target]: containerId } : {}) };
      if (o.canary) {
        const canary = { release: created.id, slot: target, match: o.canary, needed: d.canaryTurns, ok: 0, state: 'serving' as const };
        await repo.putSlots(profile, { active, release: row?.release ?? null, standby: row?.standby ?? null, canary, containers }, row?.version);
        await repo.update(created.id, { status: 'canary', outcome: { health, canary } });
        await d.audit.record({ ...base, decision: 'canary', reason: o.why ?? null, data: { by: o.who, match: o.canary, needed: d.canaryTurns, slot: target, imageDigest: decl.imageDigest } });
        return { profile, release: created.id, outcome: 'canary', health, slot: target };
      }
      await repo.putSlots(profile, { active: target, release: created.id, standby: cur?.id ?? null, canary: null, containers }, row?.version);
    } catch (err) {
      const why = `starting it in slot ${target} failed: ${describeError(err)}`;
      await repo.update(created.id, { status: 'failed', outcome: { health, why } });
      await d.driver.slot(target).discard(profile).catch(() => undefined);
      await d.audit.record({ ...base, decision: 'failed', reason: why, data: { by: o.who } });
      return { profile, release: created.id, outcome: 'failed', why, health };
    }
    await repo.update(created.id, { status: 'active', outcome: { health } });
    if (cur) await repo.update(cur.id, { status: 'superseded', outcome: { why: `superseded by ${created.id}` } });
    await d.audit.record({ ...base, decision: 'swapped', reason: o.why ?? null, data: { by: o.who, slot: target, imageDigest: decl.imageDigest, specHash: decl.specHash, replaced: cur?.id ?? null, healthMs: health.ms } });
    return { profile, release: created.id, outcome: 'swapped', health, slot: target, ...(cur ? { replaced: cur.id } : {}) };
  }

  return {
    repo,
    plan,
    async apply(ids, o) {
      const items = await plan(ids);
      const out: ApplyResult[] = [];
      for (const it of items) out.push(await applyOne(it, { ...o }));
      return out;
    },
    async rollback(profile, o) {
      const started = performance.now();
      const why = o.why ?? 'operator rollback';
      const row = await repo.slots(profile);
      if (!row?.release) throw new AgentVmError('release_none', `profile ${printable(profile, 80)} has no release to roll back (agent-vm release ls)`, { status: 404 });
      const canary = await abortCanary({ repo, audit: d.audit, logger: log }, profile, why, o.who);
      if (canary) return { profile, from: canary.release, to: row.release, how: 'canary', ms: Math.round(performance.now() - started) };
      const curRow = await repo.get(row.release);
      if (!curRow) throw new AgentVmError('release_missing', `release ${row.release} is not recorded`, { status: 500 });
      const cur = toRelease(curRow);
      if (!cur.rollbackTarget) throw new AgentVmError('release_first', `${cur.id} is the first release of ${profile}: there is nothing to roll back to`, { status: 409 });
      const targetRow = await repo.get(cur.rollbackTarget);
      if (!targetRow) throw new AgentVmError('release_missing', `the rollback target ${cur.rollbackTarget} is not recorded`, { status: 500 });
      const target = toRelease(targetRow);
      const from = slotName(row.active);
      const to = otherSlot(from);
      const st = await d.driver.slot(to).status(profile);
      const kept = st.state !== 'missing' && st.releaseLabels?.[RELEASE_ID_LABEL] === target.id && st.releaseLabels?.[RELEASE_SPEC_LABEL] === target.specHash && st.imageId === target.imageDigest;
      let containers = (row.containers as Record<string, string> | null) ?? {};
      if (!kept) {
        if (!(await d.driver.inspectImage(target.imageDigest))) {
          throw new AgentVmError('image_missing', `${target.id} ran image ${target.imageDigest.slice(0, 19)} (${printable(target.imageRef, 100)}), which is no longer on the Docker engine; nothing was changed`, { status: 409 });
        }
        const id = await prepareSlot(target, to, from);
        if (id) containers = { ...containers, [to]: id };
      }
      await repo.putSlots(profile, { active: to, release: target.id, standby: cur.id, canary: null, containers }, row.version);
      const ms = Math.round(performance.now() - started);
      // The swap is written: start the kept sandbox now (when the agent is awake) so the next turn only attaches.
      if (kept && (target.spec.relayKeys ?? []).length === 0 && ['running', 'paused'].includes((await d.driver.slot(from).status(profile)).state)) {
        await d.driver.slot(to).ensure(releaseSpec(target, to)).then((h) => (h.containerId !== containers[to] ? repo.recordContainer(profile, to, h.containerId) : undefined)).catch((err: unknown) => log.warn({ err: describeError(err), profile }, 'starting the kept slot ahead failed; the next turn starts it'));
      }
      await repo.update(cur.id, { status: 'rolled_back', outcome: { why: printable(why, 500), rolledBackBy: printable(o.who, 100), rollbackMs: ms } });
      await repo.update(target.id, { status: 'active', outcome: { why: `active again: ${cur.id} was rolled back (${printable(why, 300)})` } });
      await d.audit.record({ profile, action: 'release.rollback', decision: kept ? 'swap' : 'recreated', subject: target.id, reason: why, data: { by: o.who, from: cur.id, slot: to, ms, imageDigest: target.imageDigest } });
      return { profile, from: cur.id, to: target.id, how: kept ? 'swap' : 'recreated', ms };
    },
    async list(profile, limit) {
      return (await repo.list(profile, limit)).map(toRelease);
    },
  };
}

export type { SlotsRow };
