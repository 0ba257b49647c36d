/**
 * Assembles the gateway: router, intake, per-profile queues and units, the turn watcher. Which
 * units run here is a choice: all (`agent-vm up`), one (`agent-vm unit <profile>`), or none (a
 * front door only, with units elsewhere sharing Redis and Postgres).
 */
import type { ChannelAdapter, Intake, Platform, TurnWatcher } from '../adapters/types.js';
import type { Config } from '../config.js';
import { AgentVmError } from '../errors.js';
import type { ApprovalBroker } from '../governance/approvals.js';
import type { JobToolHost } from '../governance/mcp-builtin.js';
import { createAuditLog, type AuditLog } from '../governance/audit.js';
import { createAuditQueue } from '../governance/audit-queue.js';
import { createRedactor } from '../governance/redact.js';
import { createSecretResolver } from '../governance/secrets.js';
import type { LoadedProfiles } from '../governance/profiles.js';
import type { Logger } from '../log.js';
import { noopMetrics, type Metrics } from '../metrics.js';
import type { SandboxDriver } from '../sandbox/types.js';
import type { Store } from '../store/index.js';
import { modelUsageRepo } from '../store/model-usage.js';
import { createGatewayApprovals } from './approvals.js';
import { createIntake } from './intake.js';
import { createPermissionPolicy } from './permissions.js';
import { createQueueFactory, type QueueFactory } from './queue.js';
import { createRouter, type Router } from './router.js';
import { createSandboxService, type SandboxService } from './sandboxes.js';
import type { TurnPolicy } from './turn.js';
import { createUnit, type Unit, type UnitOptions } from './unit.js';
import { createTurnSignals, createTurnWatcher, type TurnSignals } from './watch.js';

export { sandboxSpecFor } from './unit.js';
export type { TurnPolicy } from './turn.js';

export interface GatewayOptions {
  config: Pick<Config, 'image' | 'outbox' | 'redisUrl' | 'runtime' | 'secrets' | 'replyMaxBytes' | 'maxAttempts' | 'stopGraceSeconds' | 'modelApis' | 'warmPool'>;
  /** How long a tool call that needs a person's approval waits before it is denied. Default 5 min. */
  approvalTimeoutMs?: number;
  store: Store;
  driver: SandboxDriver;
  logger: Logger;
  loaded: LoadedProfiles;
  /** Builds the channel adapters once the intake and watcher exist. */
  adapters?: (deps: { intake: Intake; watcher: TurnWatcher; approvals: ApprovalBroker }) => ChannelAdapter[];
  /** Which profiles get a unit in this process. */
  units: 'all' | 'none' | string[];
  policy?: Partial<TurnPolicy>;
  unit?: Pick<UnitOptions, 'maxAttempts' | 'lockWaitMs' | 'concurrency' | 'stopGraceMs' | 'leaseTtlMs' | 'initTimeoutMs' | 'keepAwake' | 'sweepMs'>;
  /** Runs `agentvm.run_job` for profiles with `jobs.enabled` (src/jobs). */
  jobs?: JobToolHost;
  /** Where turns, wakes, tool calls, egress, approvals and delivery failures are counted. Default: nowhere. */
  metrics?: Metrics;
}

export interface Gateway {
  readonly intake: Intake;
  readonly watcher: TurnWatcher;
  readonly signals: TurnSignals;
  readonly router: Router;
  readonly audit: AuditLog;
  readonly queues: QueueFactory;
  readonly adapters: ReadonlyMap<Platform, ChannelAdapter>;
  readonly units: ReadonlyMap<string, Unit>;
  /** Tool calls waiting for a person's approval (answered through the local API or a channel's buttons). */
  readonly approvals: ApprovalBroker;
  /** Wakes, sleeps and destroys sandboxes, recorded in the database (and counted). */
  readonly sandboxes: SandboxService;
  /** Removes every secret value the gateway knows from `text` (what operators are shown goes through it). */
  redact(text: string): string;
  /** Waits until route decisions queued so far are in the audit trail (they are written behind). */
  flushAudit(): Promise<void>;
  start(): Promise<void>;
  /** Idempotent; every step runs even if one fails. */
  stop(): Promise<void>;
}

/** How long a route decision's audit row may wait to share its statement (see createGateway). */
const ROUTE_AUDIT_LINGER_MS = 25;

export function createGateway(o: GatewayOptions): Gateway {
  const log = o.logger.child({ component: 'gateway' });
  const metrics = o.metrics ?? noopMetrics;
  if (o.units === 'none' && !o.config.redisUrl) {
    throw new AgentVmError('units_required', 'a front door without units needs REDIS_URL so separate unit processes receive its events', { status: 400 });
  }
  const router = createRouter(o.loaded);
  const audit = createAuditLog(o.store.audit);
  const queues = createQueueFactory({ redisUrl: o.config.redisUrl, logger: o.logger });
  const signals = createTurnSignals();
  const watcher = createTurnWatcher({ repo: o.store.gateway, signals });
  // Route decisions' audit rows wait longer for company than a tool call's (5 ms): the event row,
  // stored before the platform is acknowledged, is the durable record of where a message went,
  // and its audit row follows within ROUTE_AUDIT_LINGER_MS. On PGlite every statement is work on
  // this thread: bench:slack 0.42 -> ~0.50 of the no-op route (PostgreSQL: 0.38 -> 0.40).
  const routeAudit = createAuditQueue(audit, { logger: o.logger, lingerMs: ROUTE_AUDIT_LINGER_MS });
  const intake = createIntake({ router: () => router, repo: o.store.gateway, queues, audit: routeAudit, logger: o.logger });
  const secrets = createSecretResolver({ env: o.config.secrets.env, file: o.config.secrets.file, logger: o.logger });
  // Replies and files leaving for a channel never carry a secret value, whatever the agent saw.
  let redact: (text: string) => string = (t) => t;
  let longestSecret = 0;
  const redactorReady = (secrets.known?.() ?? Promise.resolve([])).then(
    (known) => {
      const r = createRedactor(known);
      redact = (t) => r(t);
      longestSecret = r.longest;
    },
    (err: unknown) => log.warn({ err }, 'could not list secrets for redaction'),
  );
  const adapters = new Map<Platform, ChannelAdapter>();
  const approvals = createGatewayApprovals({
    store: o.store,
    router: () => router,
    adapters,
    signals,
    logger: o.logger,
    timeoutMs: o.approvalTimeoutMs ?? 5 * 60_000,
    metrics,
  });
  for (const a of o.adapters?.({ intake, watcher, approvals }) ?? []) adapters.set(a.platform, countFailures(a, metrics));
  const policy: Partial<TurnPolicy> = {
    redact: (t) => redact(t),
    holdback: () => longestSecret,
    permission: createPermissionPolicy({ approve: approvals.request, timeoutMs: o.approvalTimeoutMs ?? 5 * 60_000, redact: (t) => redact(t) }),
    ...o.policy,
  };

  const wanted = o.units === 'all' ? [...router.profiles.keys()] : o.units === 'none' ? [] : o.units;
  const sandboxes = createSandboxService({ driver: o.driver, store: o.store, metrics });
  // The relay's daily token budget, on the database: shared by every unit and process, kept across restarts.
  const modelBudget = modelUsageRepo(o.store.db);
  const units = new Map<string, Unit>();
  for (const id of wanted) {
    const profile = router.profiles.get(id);
    if (!profile) {
      const bad = o.loaded.invalid.find((i) => i.id === id);
      throw new AgentVmError(
        'profile_not_served',
        bad ? `profile "${id}" is invalid (${bad.file}); run agent-vm profiles validate` : `no profile "${id}" in the profiles directory`,
        { status: 400 },
      );
    }
    units.set(
      id,
      createUnit({
        profile,
        image: o.config.image,
        store: o.store,
        driver: o.driver,
        sandboxes,
        queue: queues.queue(id),
        adapters,
        audit,
        signals,
        logger: o.logger,
        outbox: o.config.outbox,
        replyMaxBytes: o.config.replyMaxBytes,
        maxAttempts: o.config.maxAttempts,
        stopGraceMs: o.config.stopGraceSeconds * 1000,
        warmPool: (o.config.warmPool ?? 0) > 0,
        onPoolClaimed: () => fillPool(),
        policy,
        runtime: o.config.runtime,
        tools: { secrets, approve: approvals.request, metrics, ...(o.jobs ? { jobs: o.jobs } : {}) },
        models: { upstreams: o.config.modelApis, budget: modelBudget },
        metrics,
        ...o.unit,
      }),
    );
  }

  /**
   * The warm pool (AGENTVM_WARM_POOL = N): keeps up to N agents that have no sandbox yet prepared
   * (created and started with their own spec) ahead of their first message, one at a time, and
   * prepares the next when one is taken. Agents that already have a sandbox (asleep or awake)
   * need none: their wake is a start or an unpause.
   */
  let filling: Promise<void> | undefined;
  let poolTaken = 0;
  function fillPool(): void {
    const size = o.config.warmPool ?? 0;
    if (size <= 0 || stopping) return;
    poolTaken++;
    filling ??= (async () => {
      try {
        for (let again = true; again && !stopping; ) {
          again = false;
          poolTaken = 0;
          let outstanding = [...units.values()].filter((u) => u.prepared).length;
          for (const u of units.values()) {
            if (stopping || outstanding >= size) break;
            if (await u.prepare().catch((err: unknown) => log.warn({ err, profile: u.profile.id }, 'warm pool: preparing a sandbox failed'))) outstanding++;
          }
          again = poolTaken > 0;
        }
      } finally {
        filling = undefined;
      }
    })();
  }

  let stopping: Promise<void> | undefined;
  return {
    intake,
    watcher,
    signals,
    router,
    audit,
    queues,
    adapters,
    units,
    approvals,
    sandboxes,
    redact: (t) => redact(t),
    flushAudit: () => routeAudit.flush(),
    async start() {
      await redactorReady;
      for (const a of adapters.values()) await a.start?.();
      await Promise.all([...units.values()].map((u) => u.start()));
      fillPool();
      log.info({ units: [...units.keys()], adapters: [...adapters.keys()], queue: queues.kind }, 'gateway started');
    },
    stop() {
      stopping ??= (async () => {
        // First, so a turn waiting on a person ends now (denied) instead of holding the unit's stop.
        await approvals.close();
        const results = await Promise.allSettled([
          ...[...units.values()].map((u) => u.stop()),
          ...[...adapters.values()].map((a) => a.close?.()),
        ]);
        await routeAudit.close().catch((err: unknown) => log.warn({ err }, 'flushing route audit rows failed'));
        await queues.close();
        for (const r of results) if (r.status === 'rejected') log.warn({ err: r.reason }, 'stopping failed');
      })();
      return stopping;
    },
  };
}

/**
 * The adapter as the gateway uses it, with every failed `send` counted by platform and kind
 * (the error still reaches the caller unchanged). Everything else is the adapter's own.
 */
function countFailures(a: ChannelAdapter, metrics: Metrics): ChannelAdapter {
  if (metrics === noopMetrics) return a;
  const send: ChannelAdapter['send'] = async (m) => {
    try {
      await a.send(m);
    } catch (err) {
      metrics.deliveryFailed(a.platform, m.kind);
      throw err;
    }
  };
  return new Proxy(a, {
    get(target, key) {
      if (key === 'send') return send;
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v;
    },
  });
}
