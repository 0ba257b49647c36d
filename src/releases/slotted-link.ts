/**
 * The unit's link when releases are in play: one AgentLink per slot, and at each turn the slot the
 * agent's slots row names (the canary's for a conversation it matches, else the active one).
 *
 * A swap (release apply or rollback, from any process) is one write of that row. The next turn
 * reads it and runs on the new slot; turns still running on the old slot finish there (no turn is
 * cut off, none fails); once the old slot has no turn left it is hung up and stopped, its
 * container kept for an instant swap back. A slot never runs a release other than the one the row
 * names: its spec carries the release's labels, so a container of another release (or made by
 * hand) is re-created by the driver, never reused.
 *
 * Without a slots row (no release yet) the unit's plain link serves as before; from L2 up an
 * agent without a release is refused (it would run a tag, not a pinned digest).
 */
import { AgentVmError, describeError } from '../errors.js';
import { DIGEST_TIERS } from '../governance/profile-release.js';
import type { RiskTier } from '../governance/profile.js';
import { createAgentLink, type AgentLease, type AgentLink } from '../gateway/link.js';
import { createSandboxService } from '../gateway/sandboxes.js';
import type { SandboxDriver, SandboxStatus, SlotName } from '../sandbox/types.js';
import type { ReleaseRepo, SlotsRow } from '../store/releases.js';
import type { Store } from '../store/index.js';
import type { Metrics } from '../metrics.js';
import { canaryTurn, type CanaryDeps } from './canary.js';
import { canaryOf, releaseSpec, slotName, toRelease } from './spec.js';
import { matchesCanary, type Release } from './types.js';

type LinkOptions = Parameters<typeof createAgentLink>[0];

export interface SlottedLinkOptions {
  /** What every per-slot link shares with the plain one (audit, logger, endpoints, heal, …). */
  base: Omit<LinkOptions, 'spec' | 'driver' | 'sandboxes' | 'pool'>;
  /** The unit's own link, used while the agent has no release. */
  plain: () => AgentLink;
  driver: SandboxDriver;
  store: Store;
  metrics?: Metrics;
  repo: ReleaseRepo;
  risk: RiskTier;
  /** The model relay's variables for this unit (bound first); undefined when the profile has no model. */
  relayEnv: () => Promise<Readonly<Record<string, string>> | undefined>;
  canary: Omit<CanaryDeps, 'repo'>;
}

interface SlotLink {
  slot: SlotName;
  release: Release;
  link: AgentLink;
}

export interface SlottedLink extends AgentLink {
  acquire(conversation?: string): Promise<AgentLease & { release(ok?: boolean, why?: string): void }>;
}

export function createSlottedLink(o: SlottedLinkOptions): SlottedLink {
  const agentId = o.base.agentId;
  const log = o.base.logger;
  const links = new Map<SlotName, SlotLink>();
  /** Links replaced while turns still held them (a slot re-created for another release). */
  const retiring = new Set<AgentLink>();
  const releases = new Map<string, Release>();
  let lastRow: SlotsRow | undefined;
  let everRouted = false;
  /** The slot the last turn ran on, and whether its first turn after a swap was recorded. */
  let lastSlot: SlotName | undefined;
  let tidying: Promise<void> = Promise.resolve();

  async function releaseOf(id: string): Promise<Release> {
    const known = releases.get(id);
    if (known) return known;
    const row = await o.repo.get(id);
    if (!row) throw new AgentVmError('release_missing', `release ${id} is not recorded`, { status: 500 });
    const r = toRelease(row);
    releases.set(id, r);
    return r;
  }

  async function readRow(): Promise<SlotsRow | undefined> {
    try {
      lastRow = await o.repo.slots(agentId);
    } catch (err) {
      if (!everRouted) throw err;
      log.warn({ err: describeError(err) }, 'reading the agent slots failed; keeping the last known');
    }
    return lastRow;
  }

  function linkFor(slot: SlotName, r: Release, row: SlotsRow): AgentLink {
    const have = links.get(slot);
    if (have && have.release.id === r.id) return have.link;
    if (have) {
      // Another release in this slot now (re-created by a rollback): hang up the old link's
      // connection once its turns end; the driver re-creates the container for the new spec.
      if (have.link.active === 0) have.link.detach();
      else retiring.add(have.link);
    }
    const view = o.driver.slot(slot);
    const prepared = (row.containers as Record<string, string> | null)?.[slot];
    const link = createAgentLink({
      ...o.base,
      driver: view,
      sandboxes: createSandboxService({ driver: view, store: o.store, ...(o.metrics ? { metrics: o.metrics } : {}) }),
      spec: async () => releaseSpec(r, slot, await o.relayEnv()),
      // The container a release apply started for this slot is unattached: connect without a restart.
      pool: { enabled: false, isPrepared: (id) => id === prepared, claim: () => undefined },
    });
    links.set(slot, { slot, release: r, link });
    return link;
  }

  /** Stops every slot no route uses and no turn holds (kept for a swap back). Serialized. */
  let tidiedAt: number | undefined;
  /** An unrouted slot still had turns at the last tidy: look again when a turn ends. */
  let busySlot = false;
  function tidy(row: SlotsRow): void {
    // Once per version of the row (a swap, a canary's end), plus while replaced links wait for their turns.
    if (tidiedAt === row.version && retiring.size === 0 && !busySlot) return;
    tidiedAt = row.version;
    busySlot = false;
    tidying = tidying.then(async () => {
      const canary = canaryOf(row);
      const routed = new Set<SlotName>([slotName(row.active), ...(canary ? [canary.slot] : [])]);
      for (const l of [...retiring]) if (l.active === 0) (retiring.delete(l), l.detach());
      for (const slot of ['a', 'b'] as const) {
        if (routed.has(slot)) continue;
        const l = links.get(slot);
        if (l && l.link.active > 0) {
          busySlot = true;
          continue;
        }
        const st: SandboxStatus | undefined = await o.driver.slot(slot).status(agentId).catch(() => undefined);
        if (lastRow !== row && lastRow && (slotName(lastRow.active) === slot || canaryOf(lastRow)?.slot === slot)) return; // routed again meanwhile
        if (l?.link.active) {
          busySlot = true;
          continue;
        }
        if (st?.state !== 'running' && st?.state !== 'paused') continue;
        // Forget the link: a swap back makes a fresh one, which attaches to the kept (pre-started) container without a restart.
        if (l) (l.link.detach(), links.delete(slot));
        await o.driver.slot(slot).sleep(agentId);
        await o.store.agents.markSleeping(agentId).catch(() => undefined);
        log.info({ slot, release: st.releaseLabels?.['agent-vm.release'] ?? null }, 'slot no longer routed: stopped and kept for a swap back');
      }
    }).catch((err: unknown) => log.warn({ err: describeError(err) }, 'stopping an unrouted slot failed'));
  }

  const all = (): AgentLink[] => [...[...links.values()].map((l) => l.link), ...retiring, ...(lastRow ? [] : [o.plain()])];

  return {
    get healed() {
      const sum = { restart: 0, replace: 0 };
      for (const l of all()) (sum.restart += l.healed.restart), (sum.replace += l.healed.replace);
      return sum;
    },
    get awake() {
      return all().some((l) => l.awake);
    },
    get active() {
      return all().reduce((n, l) => n + l.active, 0);
    },
    get paused() {
      const awake = all().filter((l) => l.awake);
      return awake.length > 0 && awake.every((l) => l.paused);
    },
    async acquire(conversation) {
      const row = await readRow();
      if (!row?.release) {
        if (DIGEST_TIERS.includes(o.risk)) {
          throw new AgentVmError('release_required', `profile ${agentId} is at risk ${o.risk}: it runs only an image pinned by digest in a release, and it has none; an operator runs agent-vm release apply ${agentId} --yes`, { status: 409 });
        }
        return o.plain().acquire();
      }
      if (!everRouted) {
        everRouted = true;
        // The plain link may have served before the first release: hang it up once idle.
        const p = o.plain();
        if (p.awake && p.active === 0) p.detach();
      }
      const canary = canaryOf(row);
      const onCanary = canary !== null && conversation !== undefined && matchesCanary(canary.match, conversation);
      const slot = onCanary ? canary.slot : slotName(row.active);
      const r = await releaseOf(onCanary ? canary.release : row.release);
      const link = linkFor(slot, r, row);
      tidy(row);
      const swapped = lastSlot !== undefined && lastSlot !== slot && !onCanary;
      const healedBefore = link.healed.restart + link.healed.replace;
      const t0 = performance.now();
      const lease = await link.acquire();
      if (swapped) {
        const ms = Math.round(performance.now() - t0);
        log.info({ slot, release: r.id, ms }, 'first turn on the new slot');
        void o.repo.update(r.id, { outcome: { swapMs: ms } }).catch(() => undefined);
      }
      if (!onCanary) lastSlot = slot;
      let released = false;
      return {
        ...lease,
        conn: lease.conn,
        loaded: lease.loaded,
        prepared: lease.prepared,
        abandon: (s: string) => lease.abandon(s),
        release(ok?: boolean, why?: string) {
          if (released) return;
          released = true;
          lease.release();
          if (busySlot && lastRow) tidy(lastRow);
          if (!onCanary || ok === undefined) return;
          const healed = link.healed.restart + link.healed.replace > healedBefore;
          const good = ok && !healed;
          const reason = healed ? 'the agent needed self-healing (restart or replacement)' : why;
          void canaryTurn({ ...o.canary, repo: o.repo }, agentId, r.id, good, reason).then((s) => {
            if (s === 'promoted' || s === 'rolled_back') return readRow().then((x) => x && tidy(x));
          }).catch((err: unknown) => log.warn({ err: describeError(err) }, 'recording a canary turn failed'));
        },
      };
    },
    async status() {
      const row = lastRow ?? (await o.repo.slots(agentId).catch(() => undefined));
      return row ? o.driver.slot(slotName(row.active)).status(agentId) : o.plain().status();
    },
    async sleep(reason) {
      const awake = all().filter((l) => l.awake);
      if (awake.length > 0) return void (await Promise.all(awake.map((l) => l.sleep(reason))));
      // Nobody connected: the sandbox of the active slot (or the plain one) is what the idle rules meant.
      const row = lastRow;
      const l = row?.release ? links.get(slotName(row.active))?.link : o.plain();
      await l?.sleep(reason);
      if (row && !l) await o.driver.slot(slotName(row.active)).sleep(agentId);
    },
    async pause() {
      for (const l of all()) if (l.awake && l.active === 0) await l.pause();
    },
    detach() {
      for (const l of all()) l.detach();
    },
  };
}
