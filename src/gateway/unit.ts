/**
 * A gateway unit: everything one profile needs to answer, restartable on its own.
 *
 * The database is the source of truth. A queue job only says "look at this conversation"; the
 * unit then drains the conversation's open events in order, one at a time, while other
 * conversations run concurrently. A unit holds an exclusive lock on its profile, so after a crash
 * (even SIGKILL mid-turn) the restarted unit knows that every open event is orphaned and finishes
 * it: a turn that was running is run again, a reply that was stored is delivered. Each event's
 * status moves forward only, so the user gets exactly one answer.
 */
import type { ChannelAdapter, Platform } from '../adapters/types.js';
import type { AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { RuntimeSetting, SandboxDriver, SandboxSpec } from '../sandbox/types.js';
import { assertRuntimeAllowed, runtimeForTier } from '../governance/tiers.js';
import { createEgressEndpoint, EGRESS_PORT, usesEgress } from './egress.js';
import { createToolEndpoint, MCP_PORT, usesTools, type ToolDeps } from './tools.js';
import type { Store } from '../store/index.js';
import type { EventRow } from '../store/gateway.js';
import type { TurnQueue } from './queue.js';
import type { SandboxService } from './sandboxes.js';
import { createAgentLink, type AgentLink } from './link.js';
import { failTurn, runTurn, type TurnPolicy } from './turn.js';
import type { TurnSignals } from './watch.js';
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';

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
  policy?: Partial<TurnPolicy>;
  /** Turns running at once across this profile's conversations. Default 8. */
  concurrency?: number;
  /** A turn is tried this many times (unit crashes, transient failures) before the user is told it failed. */
  maxAttempts?: number;
  /** How long to wait for the profile lock held by another unit before giving up; default: wait forever. */
  lockWaitMs?: number;
  /** The gateway's runtime setting (AGENTVM_RUNTIME), checked against the profile's risk tier. */
  runtime: RuntimeSetting;
  /** Governance for tools: the MCP proxy's dependencies. */
  tools: Omit<ToolDeps, 'logger' | 'driver' | 'image' | 'runtime' | 'audit' | 'db'>;
}

export interface Unit {
  readonly profile: Profile;
  /** Takes the profile lock, recovers open events, starts consuming. */
  start(): Promise<void>;
  /** Queues a look at this conversation (used by the in-process front door and recovery). */
  kick(conversation: string, eventId: string): void;
  /** Resolves when no turn is running. */
  idle(): Promise<void>;
  /** Stops consuming, detaches from the agent, releases the lock. Idempotent. */
  stop(): Promise<void>;
}

export function sandboxSpecFor(profile: Profile, image: string, runtime?: RuntimeSetting): SandboxSpec {
  const rt = runtime ?? profile.runtime;
  return {
    agentId: profile.id,
    image: profile.image ?? image,
    command: profile.agent.command,
    env: profile.agent.env,
    ...(rt ? { runtime: rt } : {}),
    limits: profile.limits,
    // No network at all, unless the agent has tools or egress: then its own internal network,
    // whose only peers are the gateway's MCP endpoint and egress relay on the host.
    network:
      usesTools(profile) || usesEgress(profile)
        ? {
            mode: 'internal',
            hostPorts: usesTools(profile) ? [MCP_PORT] : [],
            ...(usesEgress(profile) ? { proxyPort: EGRESS_PORT } : {}),
          }
        : { mode: 'none' },
    stdin: true,
  };
}

export function createUnit(o: UnitOptions): Unit {
  const { profile, store } = o;
  const log = o.logger.child({ unit: profile.id });
  const repo = store.gateway;
  const maxAttempts = o.maxAttempts ?? 3;
  const chains = new Map<string, Promise<void>>();
  const retryTimers = new Set<NodeJS.Timeout>();
  let lock: { release(): Promise<void> } | undefined;
  let stopped = false;
  let started = false;
  let link: AgentLink | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  let lastActivity = Date.now();
  let active = 0;

  const spec = sandboxSpecFor(profile, o.image, runtimeForTier(profile.risk, profile.runtime, o.runtime));
  const tools = createToolEndpoint(profile, { ...o.tools, db: store.db, audit: o.audit, driver: o.driver, image: o.image, runtime: o.runtime, logger: log });
  const egress = createEgressEndpoint(profile, { audit: o.audit, logger: log });
  const policy = { ...o.policy, mcpServers: async ({ conversation }: { conversation: string }) => tools.servers(conversation) };

  function kick(conversation: string, eventId: string): void {
    if (stopped) return;
    void drainSerial(conversation).catch((err) => log.error({ err, eventId }, 'conversation drain failed'));
  }

  /** Turns of one conversation run one at a time, in order. */
  function drainSerial(conversation: string): Promise<void> {
    const prev = chains.get(conversation) ?? Promise.resolve();
    const next = prev.then(() => drain(conversation));
    const tracked = next.catch(() => undefined);
    chains.set(conversation, tracked);
    void tracked.finally(() => {
      if (chains.get(conversation) === tracked) chains.delete(conversation);
    });
    return next;
  }

  async function drain(conversation: string): Promise<void> {
    while (!stopped) {
      const ev = await repo.nextOpenEvent(profile.id, conversation);
      if (!ev) return;
      const done = await processEvent(ev);
      if (!done) return; // left open for a later retry
    }
  }

  /** Moves one event to a terminal status, or schedules a retry and returns false. */
  async function processEvent(ev: EventRow): Promise<boolean> {
    active++;
    lastActivity = Date.now();
    try {
      if (ev.status !== 'replied' && ev.attempts >= maxAttempts) {
        await fail(ev, `This message could not be answered after ${ev.attempts} attempts${ev.error ? ` (last error: ${ev.error})` : ''}.`);
        return true;
      }
      const result = await runTurn(ev, {
        profile,
        repo,
        audit: o.audit,
        link: agentLink(),
        adapters: o.adapters,
        signals: o.signals,
        logger: log,
        driver: o.driver,
        outbox: o.outbox,
        policy,
      });
      if (result === 'retry') {
        scheduleRetry(ev);
        return false;
      }
      return true;
    } catch (err) {
      log.error({ err, eventId: ev.id }, 'turn failed unexpectedly');
      if (isAgentVmError(err) && !err.retryable) {
        await fail(ev, `Something went wrong: ${describeError(err)}`);
        return true;
      }
      await repo.setStatus(ev.id, ev.status === 'replied' ? 'replied' : 'queued', describeError(err));
      scheduleRetry(ev);
      return false;
    } finally {
      active--;
      lastActivity = Date.now();
      o.signals.ping(ev.id);
    }
  }

  const fail = (ev: EventRow, text: string) => failTurn(ev, text, { repo, profile, signals: o.signals, adapters: o.adapters, logger: log });

  function scheduleRetry(ev: EventRow): void {
    if (stopped) return;
    const delay = Math.min(30_000, 1000 * 2 ** Math.max(0, ev.attempts - 1));
    const t = setTimeout(() => {
      retryTimers.delete(t);
      kick(ev.conversation, ev.id);
    }, delay);
    retryTimers.add(t);
  }

  function agentLink(): AgentLink {
    link ??= createAgentLink({
      spec,
      profile: profile.id,
      sandboxes: o.sandboxes,
      driver: o.driver,
      audit: o.audit,
      logger: log,
      tools,
      egress,
      assertRuntime: (rt) => assertRuntimeAllowed(profile.risk, rt as RuntimeSetting),
    });
    return link;
  }

  async function maybeSleep(): Promise<void> {
    if (stopped || active > 0 || chains.size > 0) return;
    if (Date.now() - lastActivity < profile.idle.sleepAfterSeconds * 1000) return;
    if (!link?.awake) return;
    await link.sleep('idle').catch((err) => log.warn({ err }, 'idle sleep failed'));
  }

  return {
    profile,
    kick,
    async start() {
      if (started) return;
      started = true;
      const deadline = o.lockWaitMs === undefined ? Infinity : Date.now() + o.lockWaitMs;
      for (;;) {
        lock = await store.tryLock(`agent-vm unit ${profile.id}`);
        if (lock || stopped) break;
        if (Date.now() >= deadline) {
          throw new AgentVmError('unit_busy', `profile "${profile.id}" is already served by another unit process`, { status: 409 });
        }
        log.info('another unit holds this profile; waiting');
        await new Promise((r) => setTimeout(r, 1000));
      }
      if (stopped) return;
      o.queue.consume(async (job) => drainSerial(job.conversation), { concurrency: o.concurrency ?? 8 });
      // Recovery: with the lock held, every open event of this profile is ours to finish.
      const open = await repo.openEvents(profile.id);
      const conversations = [...new Set(open.map((e) => e.conversation))];
      if (open.length > 0) log.info({ events: open.length, conversations: conversations.length }, 'recovering open events');
      for (const c of conversations) kick(c, open.find((e) => e.conversation === c)!.id);
      const every = Math.min(10_000, Math.max(200, (profile.idle.sleepAfterSeconds * 1000) / 4));
      idleTimer = setInterval(() => void maybeSleep(), every);
      idleTimer.unref();
      log.info({ queue: o.queue.name }, 'unit started');
    },
    async idle() {
      while (chains.size > 0 || active > 0) await Promise.allSettled([...chains.values()]);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (idleTimer) clearInterval(idleTimer);
      for (const t of retryTimers) clearTimeout(t);
      await o.queue.close();
      link?.detach();
      await tools.close().catch((err) => log.warn({ err }, 'closing the tool endpoint failed'));
      await egress.close().catch((err) => log.warn({ err }, 'closing the egress relay failed'));
      await lock?.release().catch((err) => log.warn({ err }, 'releasing the unit lock failed'));
      log.info('unit stopped');
    },
  };
}
