/**
 * The unit's link to its agent: the sandbox (woken on demand, put to sleep when idle) and one
 * ACP connection over the sandbox's stdio, shared by every conversation of the profile.
 *
 * Turns hold a lease on the connection. A turn whose agent ignored a cancel abandons only its own
 * session: the other turns finish on the same connection, and the agent process is restarted
 * before the next turn starts (new leases wait for the others to end), so no later prompt runs
 * beside a stuck one. When the gateway hangs up itself (stop, sleep, restart), turns still on the
 * connection fail with the retryable `agent_detached`, never with "the agent stopped".
 */
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';
import type { AuditLog } from '../governance/audit.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SandboxDriver, SandboxHandle, SandboxSpec, SandboxStatus } from '../sandbox/types.js';
import { connectAgent, type AgentConnection } from './acp.js';
import type { SandboxService } from './sandboxes.js';

/** Something that serves the agent on its network's host address (MCP endpoint, egress relay, model relay). */
export interface HostEndpoint {
  bind(hostAddress: string): Promise<void>;
}

export interface AgentLease {
  readonly conn: AgentConnection;
  /** Sessions already loaded on this connection (a new connection starts empty). */
  readonly loaded: Set<string>;
  /** Conversation directories already created during this connection. */
  readonly prepared: Set<string>;
  /** The agent ignored a cancel of `sessionId`: restart the process once the other turns are done. */
  abandon(sessionId: string): void;
  /** Ends this turn's use of the connection (`ok`: the turn was answered; a canary counts it). Idempotent. */
  release(ok?: boolean, why?: string): void;
}

export interface HealLimits {
  /** Restarts tried within one wake before it fails. */
  restartsPerStart: number;
  /** This many restarts within `windowMs` is a crash loop: replace the sandbox. */
  restartsPerWindow: number;
  /** Replacements tried within one wake (each from an older generation). */
  replacesPerStart: number;
  windowMs: number;
}

/** An agent that did not come up: its process ended or it never completed the handshake. */
function isStartFailure(err: unknown): boolean {
  return isAgentVmError(err) && ['agent_init_failed', 'sandbox_not_running', 'agent_gone'].includes(err.code);
}

export interface AgentLink {
  /** Self-healing escalations so far: restarts of a failed start, replacements from a snapshot. */
  readonly healed: Readonly<{ restart: number; replace: number }>;
  /** True while this link has a live connection to a running agent. */
  readonly awake: boolean;
  /** Turns holding the connection now. */
  readonly active: number;
  /**
   * Wakes the sandbox and connects (or reuses the live connection) for one turn. Waits while a
   * restart is pending for a stuck session. Single-flight.
   */
  acquire(conversation?: string): Promise<AgentLease>;
  status(): Promise<SandboxStatus>;
  /**
   * Hangs up, snapshots the workspace, stops the sandbox. An idle sleep is skipped when a turn
   * holds or is taking a lease; an `acquire` made while a sleep runs waits for it to finish and
   * then wakes the sandbox again (a turn never connects to a sandbox about to be stopped).
   */
  sleep(reason: string): Promise<void>;
  /**
   * The pause tier: freezes the sandbox (memory kept, no CPU) and keeps the connection; the next
   * acquire unpauses it. Call only with no lease held. A no-op when not awake.
   */
  pause(): Promise<void>;
  /** True while paused. */
  readonly paused: boolean;
  /** Hangs up (the agent keeps running); turns on the connection end with `agent_detached`. */
  detach(): void;
}

export function createAgentLink(o: {
  agentId: string;
  /** The spec to wake with: computed at each wake (it may carry endpoint addresses and tokens). */
  spec: () => Promise<SandboxSpec>;
  profile: string;
  sandboxes: SandboxService;
  driver: SandboxDriver;
  audit: AuditLog;
  logger: Logger;
  /** Bound to the sandbox's host address at each wake (tools, egress, model relay). */
  endpoints?: HostEndpoint[];
  /** Checked against the runtime the engine actually used (risk tiers). */
  assertRuntime?: (runtime: string) => void;
  /** Counts snapshots taken at sleep. */
  metrics?: Metrics;
  /** Self-healing limits; defaults: 2 restarts per wake, a crash loop is 4 restarts in 10 min, 2 replacements per wake. */
  heal?: Partial<HealLimits>;
  /** How long an agent may take to answer ACP initialize. Default 30 s. */
  initTimeoutMs?: number;
  /**
   * Replaces the sandbox (new container and workspace) from the newest good snapshot generation
   * not tried yet; returns what it restored. Absent: a crash loop only fails.
   */
  replace?: (why: string) => Promise<Record<string, unknown>>;
  /** The warm pool: whether it is on, and the sandboxes it prepared for this agent (not yet attached). */
  pool?: {
    enabled: boolean;
    isPrepared(containerId: string): boolean;
    /** The first wake happened (whatever it found). */
    claim(containerId: string): void;
    /** On a hit: the ACP connection the pool attached and initialized ahead for this sandbox (this profile's only), if still open. */
    take?(containerId: string): Promise<AgentConnection | undefined>;
  };
  /** Told of each escalation (metrics, a note to the person). */
  onHeal?: (level: 'restart' | 'replace' | 'restore', why: string, detail?: Record<string, unknown>) => void;
}): AgentLink {
  const heal: HealLimits = { restartsPerStart: 2, restartsPerWindow: 4, replacesPerStart: 2, windowMs: 10 * 60_000, ...o.heal };
  let restartTimes: number[] = [];
  const healed = { restart: 0, replace: 0 };
  let conn: AgentConnection | undefined;
  let connecting: Promise<AgentConnection> | undefined;
  /** No connection made yet by this link: an agent found running belongs to an earlier unit. */
  let fresh = true;
  /** A session was abandoned: the process must restart before the next turn. */
  let restartPending = false;
  /** Frozen by the pause tier; the connection is kept and resumes on unpause. */
  let paused = false;
  let active = 0;
  /** Counts hang-ups: a turn still waking when the gateway hung up must not start after it. */
  let hangUps = 0;
  /** Acquirers waiting for the turns on a stuck connection to end. */
  let waiters: Array<() => void> = [];
  const notify = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  const loaded = new Set<string>();
  const prepared = new Set<string>();
  const agentId = o.agentId;

  function hangUp(): void {
    conn?.close();
    conn = undefined;
    loaded.clear();
    prepared.clear();
  }

  /**
   * Graduated self-healing of a start: an agent that does not come up (its process exits, or it
   * never finishes the ACP handshake) is restarted — the workspace is kept — up to
   * `restartsPerStart` times; when restarts keep failing within the window (a crash loop: a
   * poisoned config or workspace), the sandbox is replaced from its newest good snapshot
   * generation, if the unit gave a way to. Each step is audited; nothing of it is hidden.
   */
  async function connect(): Promise<AgentConnection> {
    let restarts = 0;
    let replaces = 0;
    for (;;) {
      try {
        return await connectOnce();
      } catch (err) {
        if (!isStartFailure(err)) throw err;
        const now = Date.now();
        restartTimes = restartTimes.filter((t) => now - t < heal.windowMs);
        const why = describeError(err);
        const crashLoop = restarts >= heal.restartsPerStart || restartTimes.length >= heal.restartsPerWindow;
        if (!crashLoop) {
          restarts++;
          restartTimes.push(now);
          o.logger.warn({ agentId, why, attempt: restarts }, 'the agent did not start; restarting it');
          await o.driver.sleep(agentId).catch(() => undefined);
          healed.restart++;
          await o.audit.record({ profile: o.profile, action: 'heal', decision: 'restart', reason: why, subject: agentId, data: { attempt: restarts } });
          o.metrics?.selfHealing(o.profile, 'restart');
          o.onHeal?.('restart', why);
          continue;
        }
        // Restarts do not help (a crash loop: a poisoned config or workspace): a fresh sandbox
        // from the newest good snapshot generation not tried yet, then older ones.
        if (!o.replace || replaces >= heal.replacesPerStart) throw err;
        replaces++;
        restartTimes = [];
        o.logger.warn({ agentId, why }, 'the agent keeps failing to start; replacing its sandbox from a snapshot');
        let r: Record<string, unknown>;
        try {
          r = await o.replace(why);
        } catch (replaceErr) {
          await o.audit.record({ profile: o.profile, action: 'heal', decision: 'error', reason: `replace failed: ${describeError(replaceErr)}`, subject: agentId });
          throw new AgentVmError('agent_init_failed', `${why}; replacing the sandbox from a snapshot failed too: ${describeError(replaceErr)}`, { cause: err });
        }
        healed.replace++;
        await o.audit.record({ profile: o.profile, action: 'heal', decision: 'replace', reason: why, subject: agentId, data: { ...r } });
        o.metrics?.selfHealing(o.profile, 'replace');
        o.onHeal?.('replace', why, r);
      }
    }
  }

  async function connectOnce(): Promise<AgentConnection> {
    const spec = await o.spec();
    // A sandbox the warm pool prepared for this agent and nobody has attached to: a pool hit.
    const isPoolHit = (h: SandboxHandle) => fresh && !restartPending && h.action === 'none' && (o.pool?.isPrepared(h.containerId) ?? false);
    const poolOutcome = (h: SandboxHandle) => (isPoolHit(h) ? 'hit' : o.pool?.enabled && (h.action === 'created' || h.action === 'recreated') ? 'miss' : 'none');
    let handle = await o.sandboxes.wake(spec, o.profile, { pool: poolOutcome });
    const pool = poolOutcome(handle);
    // A hit skips attach and initialize: the pool did both ahead (any other outcome closes it in claim).
    const ready = pool === 'hit' ? await o.pool?.take?.(handle.containerId) : undefined;
    // Taken, or (a miss) lost behind the pool's back: either way the pool prepares another.
    if (fresh) o.pool?.claim(handle.containerId);
    if (pool === 'miss') o.logger.info({ agentId }, 'warm pool miss: the sandbox was created cold');
    if (pool !== 'hit' && (fresh || restartPending) && handle.action === 'none') {
      // Either an earlier unit left the agent running (its protocol state — pending requests,
      // request ids — belongs to a connection that no longer exists), or a session of ours is
      // stuck in it. Start the process afresh rather than risk a stale answer or a runaway prompt.
      o.logger.info({ agentId, stuck: restartPending }, restartPending ? 'restarting an agent with a stuck session' : 'restarting an agent left running by an earlier unit');
      await o.driver.sleep(agentId);
      handle = await o.sandboxes.wake(spec, o.profile);
    }
    fresh = false;
    restartPending = false;
    if (o.assertRuntime) {
      try {
        o.assertRuntime(handle.runtime);
      } catch (err) {
        ready?.close();
        await o.driver.sleep(agentId).catch(() => undefined);
        throw err;
      }
    }
    if (handle.hostAddress) for (const e of o.endpoints ?? []) await e.bind(handle.hostAddress);
    await o.audit.record({ profile: o.profile, action: 'wake', decision: 'ok', subject: agentId, data: { action: handle.action, runtime: handle.runtime, wakeMs: handle.wakeMs, restored: handle.restored, pool } });
    const from = handle.restoredFrom;
    if (from) {
      await o.audit.record({
        profile: o.profile, action: 'restore', decision: from.skipped.length > 0 ? 'fallback' : 'ok', subject: agentId,
        reason: from.skipped.length > 0 ? `newer generations refused: ${from.skipped.map((x) => `${x.generation} (${x.reason})`).join('; ')}` : null,
        data: { generation: from.generation, sha256: from.sha256, skipped: from.skipped.map((x) => x.generation) },
      });
      if (from.skipped.length > 0) o.onHeal?.('restore', `restored from generation ${from.generation}`, { generation: from.generation, skipped: from.skipped.length });
    }
    const c = ready && !ready.isClosed ? ready : await connectAgent(await o.driver.attach(agentId), { logger: o.logger, ...(o.initTimeoutMs ? { initTimeoutMs: o.initTimeoutMs } : {}) });
    loaded.clear();
    prepared.clear();
    void c.closed.then(() => {
      if (conn === c) {
        conn = undefined;
        loaded.clear();
        prepared.clear();
      }
    });
    conn = c;
    return c;
  }

  /** A paused sandbox is unpaused (the engine resumes its processes; the connection lives on). */
  async function unpause(c: AgentConnection): Promise<AgentConnection> {
    const started = performance.now();
    const handle = await o.sandboxes.wake(await o.spec(), o.profile);
    paused = false;
    if (handle.action !== 'unpaused' && handle.action !== 'none') {
      // Not the sandbox we were connected to any more (stopped or re-created meanwhile): reconnect.
      hangUp();
      return connect();
    }
    await o.audit.record({ profile: o.profile, action: 'wake', decision: 'ok', subject: agentId, data: { action: handle.action, tier: 'paused', wakeMs: Math.round(performance.now() - started) } });
    return c;
  }

  /** Hangs up, snapshots, stops (see `sleep`). */
  let sleeping: Promise<void> | undefined;
  async function sleepNow(reason: string): Promise<void> {
    const sessions = [...loaded];
    hangUp();
    paused = false;
    const snap = await o.driver.snapshot(agentId, { reason: reason === 'idle' ? 'idle' : 'stop', sessions }).catch((err: unknown) => {
      o.logger.warn({ err, agentId }, 'snapshot before sleep failed');
      return undefined;
    });
    if (snap) o.metrics?.snapshotTaken(o.profile, snap.bytes);
    await o.sandboxes.sleep(agentId);
    restartPending = false;
    await o.audit.record({ profile: o.profile, action: 'sleep', decision: 'ok', subject: agentId, reason, data: { snapshotBytes: snap?.bytes ?? null, generation: snap?.generation ?? null, sha256: snap?.sha256 ?? null } });
    o.logger.info({ agentId, reason }, 'agent asleep');
  }

  function connection(): Promise<AgentConnection> {
    if (conn && !conn.isClosed && !restartPending && paused) {
      const c = conn;
      connecting ??= unpause(c).finally(() => {
        connecting = undefined;
        notify();
      });
      return connecting;
    }
    if (conn && !conn.isClosed && !restartPending) return Promise.resolve(conn);
    if (restartPending && conn) hangUp();
    connecting ??= connect().finally(() => {
      connecting = undefined;
      notify();
    });
    return connecting;
  }

  return {
    healed,
    get awake() {
      return conn !== undefined && !conn.isClosed;
    },
    get active() {
      return active;
    },
    async acquire() {
      // A sleep under way stops the sandbox: wait for it, then wake it again.
      while (sleeping) await sleeping.catch(() => undefined);
      // A stuck session: let the turns still on the connection finish, then restart (or join
      // the restart already under way).
      while (restartPending && active > 0 && !connecting) await new Promise<void>((r) => waiters.push(r));
      active++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        active--;
        notify();
      };
      let c: AgentConnection;
      const hangUpsBefore = hangUps;
      try {
        c = await connection();
      } catch (err) {
        release();
        throw err;
      }
      // The gateway hung up (stop, sleep, restart) while this turn waited for the agent: the
      // turn does not start on the connection that came up after it, it runs again later.
      if (hangUps !== hangUpsBefore) {
        release();
        throw new AgentVmError('agent_detached', 'the gateway hung up on the agent before the turn started (stop, restart or sleep); the turn runs again', { retryable: true });
      }
      return {
        conn: c,
        loaded,
        prepared,
        abandon(sessionId) {
          if (c !== conn) return; // that connection is already gone
          o.logger.warn({ agentId, sessionId }, 'the agent ignored a cancel; it restarts once the other turns are done');
          restartPending = true;
          loaded.delete(sessionId);
        },
        release,
      };
    },
    status: () => o.driver.status(agentId),
    async sleep(reason) {
      if (sleeping) return sleeping;
      if (reason === 'idle' && (active > 0 || connecting)) return; // a turn came in meanwhile
      sleeping = sleepNow(reason).finally(() => {
        sleeping = undefined;
        notify();
      });
      return sleeping;
    },

    get paused() {
      return paused;
    },
    async pause() {
      if (paused || !conn || conn.isClosed || active > 0) return;
      await o.driver.pause(agentId);
      paused = true;
      await o.audit.record({ profile: o.profile, action: 'pause', decision: 'ok', subject: agentId, reason: 'idle' });
    },
    detach() {
      hangUps++;
      hangUp();
      // The process may still be running a prompt we stopped listening to.
      restartPending = true;
    },
  };
}
