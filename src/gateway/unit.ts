/**
 * A gateway unit: everything one profile needs to answer, restartable on its own.
 *
 * The database is the source of truth. A queue job only says "look at this conversation"; the unit then drains the
 * conversation's open events in order, one at a time, while other conversations run concurrently. A unit serves its
 * profile only while it holds the profile's lease (lease.ts: fenced, so two units never serve one profile at once), so
 * after a crash (even SIGKILL mid-turn) the next unit knows that every open event is orphaned and finishes it: a turn
 * that was running is run again, a reply that was stored is delivered. Each event's status moves forward only, so the
 * user gets exactly one answer.
 *
 * Interruptions the gateway causes itself (a stop, a lost lease, a restart of a stuck agent) are never failures: the
 * event goes back to `queued` without counting the attempt, and nobody is told anything until it has really been
 * answered.
 */
import type { ChannelAdapter, Platform } from '../adapters/types.js';
import type { AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { RuntimeSetting, SandboxDriver } from '../sandbox/types.js';
import { assertRuntimeAllowed, runtimeForTier } from '../governance/tiers.js';
import { createEgressEndpoint } from './egress.js';
import { createModelEndpoint, usesModels } from './models.js';
import type { ModelBudget } from '../governance/model-relay/types.js';
import type { Config } from '../config.js';
import type { SandboxSpec } from '../sandbox/types.js';
import { createToolEndpoint, type ToolDeps } from './tools.js';
import type { Store } from '../store/index.js';
import type { EventRow } from '../store/gateway.js';
import { isDbUnavailable } from '../store/errors.js';
import type { TurnQueue } from './queue.js';
import type { SandboxService } from './sandboxes.js';
import { createAgentLink, type AgentLink } from './link.js';
import { startSweep } from './unit-sweep.js';
import { createUnitPool } from './unit-pool.js';
import { createProfileLease } from './lease.js';
import { failTurn, logTurnFailure, runTurn, type TurnPolicy } from './turn.js';
import type { TurnSignals } from './watch.js';
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';
import { sandboxSpecFor } from './spec.js';
import { createSlottedLink, type SlottedLinkOptions } from '../releases/slotted-link.js';
import { releaseRepo } from '../store/releases.js';

export { sandboxSpecFor } from './spec.js';

export interface UnitOptions {
  profile: Profile;
  image: string;
  store: Store;
  driver: SandboxDriver;
  sandboxes: SandboxService;
  queue: TurnQueue;
  adapters: ReadonlyMap<Platform, ChannelAdapter>;
  audit: AuditLog;
  signals: TurnSignals;
  logger: Logger;
  outbox: { maxFileBytes: number; maxTotalBytes: number; maxFiles: number };
  /** Longest reply text sent as a message (AGENTVM_REPLY_MAX_BYTES). */
  replyMaxBytes?: number;
  policy?: Partial<TurnPolicy>;
  /** Turns running at once across this profile's conversations. Default 8. */
  concurrency?: number;
  /** A turn is tried this many times (unit crashes, transient failures) before the user is told it failed (AGENTVM_MAX_ATTEMPTS). */
  maxAttempts?: number;
  /** How long to wait for the profile held by another unit before giving up; default: wait forever. */
  lockWaitMs?: number;
  /** How long `stop()` waits for running turns before hanging up on them (they stay open for recovery). Default 30 s. */
  stopGraceMs?: number;
  /** The profile lease's length (see lease.ts). Default 15 s. */
  leaseTtlMs?: number;
  /** How often the unit looks for open events whose wake-up was lost (unit-sweep.ts). Default 60 s; 0: never. */
  sweepMs?: number;
  /** How long the agent may take to answer ACP initialize before a restart. Default 30 s. */
  initTimeoutMs?: number;
  /** Leave the agent awake when the unit stops (`up --keep-awake`); default: snapshot and stop what this unit woke. */
  keepAwake?: boolean;
  /** The warm pool is on (AGENTVM_WARM_POOL > 0): first wakes are recorded as pool hits or misses. */
  warmPool?: boolean;
  /** Told when this unit's prepared sandbox was taken by a turn (the pool prepares the next agent). */
  onPoolClaimed?: () => void;
  /** The gateway's runtime setting (AGENTVM_RUNTIME), checked against the profile's risk tier. */
  runtime: RuntimeSetting;
  /** Governance for tools: the MCP proxy's dependencies. */
  tools: Omit<ToolDeps, 'logger' | 'driver' | 'image' | 'runtime' | 'audit' | 'db' | 'pins'>;
  /** Counts turns, egress and snapshots (src/metrics.ts). Default: nowhere. */
  metrics?: Metrics;
  /** The model providers' base URLs (AGENTVM_*_API_URL) and the daily token budget's store. */
  models?: { upstreams: Config['modelApis']; budget?: ModelBudget };
}

export interface Unit {
  readonly profile: Profile;
  /**
   * The warm pool: creates and starts this agent's sandbox ahead of its first message when it has
   * none (its own spec, identity, workspace and limits: nothing is carried over from anything).
   * Returns false when there was nothing to prepare.
   */
  prepare(): Promise<boolean>;
  /** True while a sandbox the pool prepared waits for its first turn. */
  readonly prepared: boolean;
  /** True while this unit holds its profile and takes turns. */
  readonly serving: boolean;
  /** Takes the profile (waits while another unit serves it), recovers open events, starts consuming. */
  start(): Promise<void>;
  /** Queues a look at this conversation (used by the in-process front door and recovery). */
  kick(conversation: string, eventId: string): void;
  /** Resolves when no turn is running. */
  idle(): Promise<void>;
  /** Operator: wakes the agent now (sandbox and ACP connection), as a turn would. */
  wake(): Promise<void>;
  /** Operator: snapshot and stop now; false (nothing done) while a turn runs. */
  sleep(reason: string): Promise<boolean>;
  /**
   * Stops taking turns, waits for running ones up to the grace period, hangs up on the rest
   * (left open for the next unit to recover, with no notice to anyone), releases the profile.
   * Idempotent.
   */
  stop(): Promise<void>;
}

export function createUnit(o: UnitOptions): Unit {
  const { profile, store } = o;
  const log = o.logger.child({ unit: profile.id });
  const repo = store.gateway;
  const maxAttempts = o.maxAttempts ?? 3;
  const chains = new Map<string, Promise<void>>();
  const retryTimers = new Set<NodeJS.Timeout>();
  let stopped = false;
  let started = false;
  let consuming = false;
  let link: AgentLink | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  let sweeper: { stop(): void } | undefined;
  let lastActivity = Date.now();
  let active = 0;

  const lease = createProfileLease({
    repo: store.leases,
    key: `unit:${profile.id}`,
    logger: log,
    singleProcess: store.kind === 'pglite',
    ...(o.leaseTtlMs ? { ttlMs: o.leaseTtlMs } : {}),
    onWaiting: (holder) => log.info({ holder }, 'another unit serves this profile; waiting'),
    onLost: () => {
      // Stop at once: hang up on running turns (they go back to the queue), then try to take the
      // profile again; whoever holds it now serves meanwhile.
      link?.detach();
      if (!stopped) void takeProfile().catch((err) => log.error({ err: describeError(err) }, 'retaking the profile failed'));
    },
  });
  const serving = () => !stopped && lease.valid;

  const runtime = runtimeForTier(profile.risk, profile.runtime, o.runtime);
  const models = createModelEndpoint(profile, {
    secrets: o.tools.secrets,
    audit: o.audit,
    logger: log,
    upstreams: o.models?.upstreams ?? { anthropic: 'https://api.anthropic.com', openai: 'https://api.openai.com', gemini: 'https://generativelanguage.googleapis.com' },
    ...(o.models?.budget ? { budget: o.models.budget } : {}),
    metrics: o.metrics,
  });
  /** The spec to wake with; with models, the relay is bound first (its address and tokens are in the env). */
  async function spec(): Promise<SandboxSpec> {
    if (!usesModels(profile)) return sandboxSpecFor(profile, o.image, runtime);
    await models.bind(await o.driver.prepareNetwork(profile.id));
    return sandboxSpecFor(profile, o.image, runtime, models.env());
  }
  const tools = createToolEndpoint(profile, { ...o.tools, pins: store.pins, audit: o.audit, driver: o.driver, image: o.image, runtime: o.runtime, logger: log });
  const egress = createEgressEndpoint(profile, { audit: o.audit, logger: log, metrics: o.metrics });
  const policy: Partial<TurnPolicy> = {
    ...o.policy,
    tools: ({ conversation, eventId, ttlMs, connection }) => tools.forTurn(conversation, { turnId: eventId, ttlMs, connection }),
  };

  function kick(conversation: string, eventId: string): void {
    if (stopped) return;
    void drainSerial(conversation).catch((err) => log.error({ err, eventId }, 'conversation drain failed'));
  }

  /** Turns of one conversation run one at a time, in order. */
  function drainSerial(conversation: string): Promise<void> {
    const prev = chains.get(conversation) ?? Promise.resolve();
    const next = prev.then(() => drain(conversation)).catch((err: unknown) => {
      // The database out of reach while finding the next turn: its events stay open and nothing else would look again.
      if (stopped || !isDbUnavailable(err)) throw err;
      log.warn({ conversation, why: describeError(err) }, 'the database dropped out while taking the next turn; looking again in a second');
      later(1000, () => kick(conversation, ''));
    });
    const tracked = next.catch(() => undefined);
    chains.set(conversation, tracked);
    void tracked.finally(() => {
      if (chains.get(conversation) === tracked) chains.delete(conversation);
    });
    return next;
  }

  async function drain(conversation: string): Promise<void> {
    while (serving()) {
      // The next open event, already started when it is a turn to run (one round trip).
      const next = await repo.claimNext(profile.id, conversation, maxAttempts);
      if (!next) return;
      if (!serving()) {
        if (next.started) await repo.interrupt(next.row.id, 'the gateway stopped serving this profile').catch(() => undefined);
        return;
      }
      // The turn sees the event as found: `attempts` counts the tries before this one.
      const ev = next.started ? { ...next.row, attempts: next.row.attempts - 1 } : next.row;
      const done = await processEvent(ev, next.started, next.session);
      if (!done) return; // left open for a later retry
      retries.delete(ev.id);
    }
  }

  /** Moves one event to a terminal status, or leaves it open (retry or recovery) and returns false. */
  async function processEvent(ev: EventRow, started: boolean, session: string | null): Promise<boolean> {
    active++;
    busySinceSnapshot = true;
    lastActivity = Date.now();
    try {
      if (!started && ev.status !== 'replied' && ev.attempts >= maxAttempts) {
        const why = ev.error ? ` The last attempt failed: ${ev.error}` : '';
        await fail(ev, `This message could not be answered: it was tried ${ev.attempts} times (the limit, AGENTVM_MAX_ATTEMPTS, is ${maxAttempts}).${why} Send it again to retry.`);
        return true;
      }
      const result = await runTurn(ev, {
        started,
        ...(started ? { session } : {}),
        profile,
        repo,
        audit: o.audit,
        link: agentLink(),
        adapters: o.adapters,
        signals: o.signals,
        logger: log,
        driver: o.driver,
        outbox: o.outbox,
        reply: { maxBytes: o.replyMaxBytes ?? 1024 * 1024 },
        notes: () => healNotes.splice(0),
        models,
        policy,
        metrics: o.metrics,
      });
      if (result === 'retry') {
        scheduleRetry(ev);
        return false;
      }
      return true;
    } catch (err) {
      if (isAgentVmError(err, 'agent_detached')) {
        // We hung up ourselves (stop, lost lease, restart): not the turn's fault, not an attempt.
        log.info({ eventId: ev.id }, 'turn interrupted by the gateway; left open to run again');
        await repo.interrupt(ev.id, describeError(err)).catch((e: unknown) => log.warn({ err: describeError(e), eventId: ev.id }, 'could not requeue an interrupted turn'));
        scheduleRetry(ev);
        return false;
      }
      logTurnFailure(log, ev.id, err);
      if (isAgentVmError(err) && !err.retryable) {
        await fail(ev, `Something went wrong: ${describeError(err)}`);
        return true;
      }
      await repo.setStatus(ev.id, ev.status === 'replied' ? 'replied' : 'queued', describeError(err)).catch(() => undefined);
      scheduleRetry(ev);
      return false;
    } finally {
      active--;
      lastActivity = Date.now();
      o.signals.ping(ev.id);
    }
  }

  const fail = (ev: EventRow, text: string) => failTurn(ev, text, { repo, profile, signals: o.signals, adapters: o.adapters, logger: log, metrics: o.metrics });

  /**
   * Retries so far per open event, in this process: a reply that keeps failing to deliver backs
   * off (1 s, 2 s, 4 s … 30 s) although its attempts, which count turn starts, stay put.
   */
  const retries = new Map<string, number>();
  function scheduleRetry(ev: EventRow): void {
    if (stopped) return;
    const n = (retries.get(ev.id) ?? 0) + 1;
    retries.set(ev.id, n);
    if (retries.size > 10_000) retries.delete(retries.keys().next().value!);
    const delay = Math.min(30_000, 1000 * 2 ** Math.max(0, Math.max(n, ev.attempts) - 1));
    backingOff.add(ev.conversation);
    later(delay, () => {
      backingOff.delete(ev.conversation);
      kick(ev.conversation, ev.id);
    });
  }
  /** Conversations waiting out a retry's delay: the sweep leaves them alone. */
  const backingOff = new Set<string>();


  /** Runs `fn` after `ms`; stop() clears what is still waiting. */
  const later = (ms: number, fn: () => void) => void retryTimers.add(setTimeout(function run(this: NodeJS.Timeout) { retryTimers.delete(this); fn(); }, ms));

  /** Releases (src/releases): the slot the agent's slots row names serves each turn; the plain link before any release. */
  function agentLink(): AgentLink {
    link ??= createSlottedLink({
      base: linkBase(),
      plain: plainLink,
      driver: o.driver,
      store,
      ...(o.metrics ? { metrics: o.metrics } : {}),
      repo: releaseRepo(store.db),
      risk: profile.risk,
      relayEnv: async () => (usesModels(profile) ? (await models.bind(await o.driver.prepareNetwork(profile.id)), models.env()) : undefined),
      canary: { audit: o.audit, logger: log },
    });
    return link;
  }
  let plain: AgentLink | undefined;
  const plainLink = (): AgentLink => (plain ??= createAgentLink({ ...linkBase(), spec, sandboxes: o.sandboxes, driver: o.driver, pool }));

  function linkBase(): SlottedLinkOptions['base'] {
    return {
      agentId: profile.id,
      profile: profile.id,
      audit: o.audit,
      logger: log,
      endpoints: [tools, egress, models],
      replace,
      onHeal: (level, _why, detail) => {
        // Only the replacement that held is worth telling: an earlier one in the same wake is dropped.
        if (level === 'replace') for (let i = healNotes.length - 1; i >= 0; i--) if (healNotes[i]!.includes('sandbox was replaced')) healNotes.splice(i, 1);
        if (level === 'replace') healNotes.push(`(The agent kept failing to start, so its sandbox was replaced; its workspace came back from snapshot generation ${String(detail?.generation)}, taken ${String(detail?.createdAt)}.)`);
        if (level === 'restore') healNotes.push(`(The agent's workspace was restored from snapshot generation ${String(detail?.generation)}; ${String(detail?.skipped)} newer generation(s) could not be used.)`);
      },
      ...(o.initTimeoutMs ? { initTimeoutMs: o.initTimeoutMs } : {}),
      assertRuntime: (rt: string) => assertRuntimeAllowed(profile.risk, rt as RuntimeSetting),
      metrics: o.metrics,
    };
  }

  /** The idle tiers: paused after `idle.pauseAfterSeconds`, snapshot and stopped after `idle.sleepAfterSeconds`. */
  async function maybeSleep(): Promise<void> {
    if (!serving() || active > 0 || chains.size > 0) return;
    if (warm.prepared) return; // kept warm on purpose by the pool
    if (link && link.active > 0) return;
    const idleMs = Date.now() - lastActivity;
    const { pauseAfterSeconds, sleepAfterSeconds } = profile.idle;
    if (idleMs < sleepAfterSeconds * 1000) {
      if (pauseAfterSeconds < sleepAfterSeconds && idleMs >= pauseAfterSeconds * 1000 && link?.awake && !link.paused) {
        await link.pause().catch((err) => log.warn({ err: describeError(err) }, 'idle pause failed'));
      }
      return;
    }
    if (!link?.awake) {
      // A sandbox awake with nobody connected: left by a process that woke it and went away (an
      // in-process `send`, a crashed gateway). The idle rules apply to it all the same.
      const st = await o.driver.status(profile.id).catch(() => undefined);
      if (st?.state !== 'running' && st?.state !== 'paused') return;
      log.info({ state: st.state }, 'an awake sandbox nobody serves: applying the idle rules');
    }
    // A message may have come in while we looked (the link skips an idle sleep once a turn holds it).
    if (!serving() || active > 0 || chains.size > 0 || Date.now() - lastActivity < sleepAfterSeconds * 1000) return;
    tools.revokeAll();
    await agentLink().sleep('idle').catch((err) => log.warn({ err }, 'idle sleep failed'));
  }

  /** While busy, a snapshot every `snapshot.everyMinutes` (besides the one before sleep). */
  let lastSnapshot = Date.now();
  let busySinceSnapshot = false;
  async function maybeSnapshot(): Promise<void> {
    const every = profile.snapshot.everyMinutes * 60_000;
    if (every <= 0 || !busySinceSnapshot || !serving() || !link?.awake || Date.now() - lastSnapshot < every) return;
    lastSnapshot = Date.now();
    busySinceSnapshot = false;
    try {
      const snap = await o.driver.snapshot(profile.id, { reason: 'periodic' });
      await o.audit.record({ profile: profile.id, action: 'snapshot', decision: 'ok', subject: profile.id, reason: 'periodic', data: { generation: snap.generation, sha256: snap.sha256, bytes: snap.bytes } });
    } catch (err) {
      log.warn({ err: describeError(err) }, 'periodic snapshot failed; the next one is tried on schedule');
    }
  }

  const warm = createUnitPool({
    profile, enabled: o.warmPool ?? false, ...(o.onPoolClaimed ? { onClaimed: o.onPoolClaimed } : {}), driver: o.driver, sandboxes: o.sandboxes,
    audit: o.audit, logger: log, ...(o.initTimeoutMs ? { initTimeoutMs: o.initTimeoutMs } : {}), spec, stopped: () => stopped,
  });
  const pool = warm.link;

  /** Said to the person with the next answer: the agent was replaced or restored from a snapshot. */
  const healNotes: string[] = [];
  /** The generation the last replacement restored; the next one goes further back. */
  let lastTried: number | undefined;
  async function replace(): Promise<Record<string, unknown>> {
    const r = await o.driver.restore(profile.id, lastTried !== undefined ? { before: lastTried } : {});
    lastTried = r.generation;
    return { generation: r.generation, createdAt: r.createdAt, skipped: r.skipped.length };
  }

  /** Waits for the profile, then recovers every open event of it. */
  async function takeProfile(): Promise<void> {
    const deadline = o.lockWaitMs === undefined ? Infinity : Date.now() + o.lockWaitMs;
    const got = await lease.acquire(() => stopped || Date.now() >= deadline);
    if (!got) {
      if (stopped) return;
      throw new AgentVmError('unit_busy', `profile "${profile.id}" is already served by another unit process`, { status: 409 });
    }
    if (!consuming) {
      consuming = true;
      o.queue.consume(async (job) => drainSerial(job.conversation), { concurrency: o.concurrency ?? 8 });
    }
    // Recovery: with the profile ours, every open event of it is ours to finish.
    const open = await repo.openEvents(profile.id);
    const conversations = [...new Set(open.map((e) => e.conversation))];
    if (open.length > 0) log.info({ events: open.length, conversations: conversations.length }, 'recovering open events');
    for (const c of conversations) kick(c, open.find((e) => e.conversation === c)!.id);
  }

  return {
    profile,
    get serving() {
      return serving();
    },
    kick,
    get prepared() {
      return warm.prepared;
    },
    async prepare() {
      if (!serving() || link?.awake || warm.prepared) return false;
      if ((await o.driver.status(profile.id)).state !== 'missing') return false;
      await warm.prepare();
      return true;
    },
    async start() {
      if (started) return;
      started = true;
      await takeProfile();
      if (stopped) return;
      const every = Math.min(10_000, Math.max(200, (Math.min(profile.idle.pauseAfterSeconds, profile.idle.sleepAfterSeconds) * 1000) / 4));
      idleTimer = setInterval(() => {
        void maybeSleep();
        void maybeSnapshot();
      }, every);
      idleTimer.unref();
      sweeper = startSweep({
        everyMs: o.sweepMs ?? 60_000, serving, room: () => (o.concurrency ?? 8) - chains.size,
        busy: (c) => chains.has(c) || backingOff.has(c), openEvents: () => repo.openEvents(profile.id), kick, log,
      });
      log.info({ queue: o.queue.name }, 'unit started');
    },
    async idle() {
      while (chains.size > 0 || active > 0) await Promise.allSettled([...chains.values()]);
    },
    async wake() {
      (await agentLink().acquire()).release();
      lastActivity = Date.now();
    },
    async sleep(reason) {
      if (active > 0 || chains.size > 0 || (link?.active ?? 0) > 0) return false;
      tools.revokeAll();
      await agentLink().sleep(reason);
      return true;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      warm.drop();
      if (idleTimer) clearInterval(idleTimer);
      sweeper?.stop();
      for (const t of retryTimers) clearTimeout(t);
      // Every running turn (queued, recovered or retried) gets the grace period to finish.
      const grace = o.stopGraceMs ?? 30_000;
      let timer: NodeJS.Timeout | undefined;
      const all = () => Promise.allSettled([...chains.values()]);
      const finished = await Promise.race([all().then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), grace)))]);
      clearTimeout(timer);
      if (!finished) log.info({ running: active }, 'turns still running at stop; hanging up, they stay open for recovery');
      // Hang up (turns still on the connection end as interruptions), then let them record that.
      link?.detach();
      await Promise.race([all(), new Promise((r) => setTimeout(r, 5000))]);
      // What this process woke, it puts to sleep (snapshot, stop) unless told to leave it awake.
      if (!o.keepAwake && link) {
        tools.revokeAll();
        const st = await o.driver.status(profile.id).catch(() => undefined);
        if (st?.state === 'running' || st?.state === 'paused') await link.sleep('shutdown').catch((err) => log.warn({ err }, 'putting the agent to sleep at shutdown failed'));
      }
      await o.queue.close();
      tools.revokeAll();
      await tools.close().catch((err) => log.warn({ err }, 'closing the tool endpoint failed'));
      await egress.close().catch((err) => log.warn({ err }, 'closing the egress relay failed'));
      await models.close().catch((err) => log.warn({ err }, 'closing the model relay failed'));
      await lease.release().catch((err) => log.warn({ err: describeError(err) }, 'releasing the profile lease failed'));
      log.info('unit stopped');
    },
  };
}
