/**
 * What agent-vm counts for Prometheus (`GET /metrics`, every name prefixed `agentvm_`).
 *
 * `Metrics` is the seam: code where something happens calls one method (a turn finished, a
 * sandbox woke, a tool call was decided), and never touches prom-client. `noopMetrics` is the
 * default everywhere, so a component built without metrics (a CLI command, a unit test) counts
 * nothing and needs no registry. `createMetrics(registry)` is the Prometheus implementation.
 *
 * Labels are bounded: profile ids (bounded by the manifests; anything that does not look like an
 * id, and anything past `MAX_PROFILES` distinct ids, is counted as `other`), platforms, and small
 * fixed sets of outcomes. Never a conversation, event, user or tool argument.
 *
 * Gauges that describe state rather than events (sandboxes by state, queue depth, approvals
 * pending) are read at scrape time from `MetricSources` (the database), so a front door serving
 * `/metrics` shows the units of every process that shares the database.
 *
 * Deliberately left out: per-conversation or per-user series, and anything measured by a caller
 * that is not on this interface (add a method rather than reach for the registry).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** What a wake had to do: SandboxHandle.action, or `restored` when the workspace came back from a snapshot. */
export type WakeKind = 'none' | 'unpaused' | 'started' | 'created' | 'recreated' | 'restored';
/** Warm pool: a pre-started sandbox was taken (`hit`), none was ready (`miss`), or no pool is configured (`none`). */
export type PoolOutcome = 'hit' | 'miss' | 'none';
/** How a turn ended: an answer delivered, a notice instead (failed, timed out, crashed), or an answer that could not be delivered. */
export type TurnOutcomeLabel = 'replied' | 'failed' | 'undeliverable';
/**
 * A tool call through the MCP proxy: forwarded (`allowed`), refused (`denied`: policy, pin, audit,
 * upstream failure, or a person said no), or sent to a person first (`approval`, counted when
 * asked; the same call is then counted once more as `allowed` or `denied`).
 */
export type ToolDecision = 'allowed' | 'denied' | 'approval';
export type ApprovalOutcome = 'approved' | 'denied' | 'timeout';
export type EgressDecision = 'allow' | 'deny';
/** Graduated self-healing: reload the agent process, restart the sandbox, replace it from a snapshot. */
export type HealLevel = 'reload' | 'restart' | 'replace';
export type DeliveryKind = 'reply' | 'notice' | 'progress' | 'partial';

/** Token counts of one model call, as the model relay's `usage` event carries them. */
export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
}

export interface Metrics {
  /**
   * A turn reached its end (one call per turn); `seconds` from the start of its last attempt,
   * undefined when this process did not see it start (a reply delivered after a restart): then
   * the turn is counted but not timed.
   */
  turnFinished(profile: string, platform: string, outcome: TurnOutcomeLabel, seconds?: number): void;
  /** A sandbox wake finished (SandboxService.wake). */
  wake(profile: string, kind: WakeKind, ms: number, pool: PoolOutcome): void;
  /** A tool call was decided (src/governance/mcp-proxy.ts). */
  toolCall(profile: string, decision: ToolDecision): void;
  /** An approval request ended, however it ended (src/governance/approvals.ts). */
  approvalSettled(profile: string, outcome: ApprovalOutcome): void;
  /** One egress attempt, as the relay decided it (src/governance/egress.ts). */
  egress(profile: string, decision: EgressDecision): void;
  /** Self-healing escalated to `level` (lifecycle work: not called yet). */
  selfHealing(profile: string, level: HealLevel): void;
  /** A workspace snapshot was written: its size, and when (default now) for the age gauge. */
  snapshotTaken(profile: string, bytes: number, atMs?: number): void;
  /** Tokens of one model call (wire: the model relay's `usage` event; see `modelRelayMetrics`). */
  modelTokens(profile: string, provider: string, usage: TokenUsage): void;
  /** A message to a platform could not be delivered (any kind; a retried reply counts each failure). */
  deliveryFailed(platform: string, kind: DeliveryKind): void;
}

/** Counts nothing: the default wherever no registry was given. */
export const noopMetrics: Metrics = Object.freeze({
  turnFinished: () => undefined,
  wake: () => undefined,
  toolCall: () => undefined,
  approvalSettled: () => undefined,
  egress: () => undefined,
  selfHealing: () => undefined,
  snapshotTaken: () => undefined,
  modelTokens: () => undefined,
  deliveryFailed: () => undefined,
});

/** State read at scrape time (src/store/operator.ts implements it on the database). */
export interface MetricSources {
  /** Agent sandboxes as recorded, by state (`running`, `sleeping`, `destroyed`, …). */
  sandboxesByState(): Promise<Array<{ state: string; count: number }>>;
  /** Open events per profile: `queued` (waiting for a turn) and `running`. */
  eventsByStatus(): Promise<Array<{ profile: string; status: string; count: number }>>;
  /** Approval requests pending and unexpired. */
  approvalsPending(): Promise<number>;
}

/** Distinct profile label values kept before the rest are counted as `other`. */
export const MAX_PROFILES = 500;
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const PLATFORMS = new Set(['local', 'slack', 'discord', 'clickup']);
const PROVIDERS = new Set(['anthropic', 'openai', 'gemini']);

export const TURN_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
export const WAKE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];

/**
 * The Prometheus implementation, registering every `agentvm_` series on `registry`. `sources`
 * fills the state gauges at scrape time; without it they stay absent. A failing source leaves
 * its gauge empty for that scrape (never fails the scrape).
 */
export function createMetrics(registry: Registry, sources?: MetricSources, now: () => number = Date.now): Metrics {
  const profiles = new Set<string>();
  const profile = (p: string): string => {
    if (!ID.test(p)) return 'other';
    if (profiles.has(p)) return p;
    if (profiles.size >= MAX_PROFILES) return 'other';
    profiles.add(p);
    return p;
  };
  const platform = (p: string) => (PLATFORMS.has(p) ? p : 'other');
  const registers = [registry];

  const turns = new Counter({ name: 'agentvm_turns_total', help: 'Turns that reached their end, by profile, platform and outcome (replied, failed, undeliverable)', labelNames: ['profile', 'platform', 'outcome'], registers });
  const turnSeconds = new Histogram({ name: 'agentvm_turn_duration_seconds', help: 'Time from the start of a turn\'s last attempt to its end', labelNames: ['profile', 'outcome'], buckets: TURN_BUCKETS, registers });
  const wakeSeconds = new Histogram({
    name: 'agentvm_wake_duration_seconds',
    help: 'Sandbox wake latency, by what the wake had to do (none, unpaused, started, created, recreated, restored) and warm pool outcome (hit, miss, none)',
    labelNames: ['profile', 'kind', 'pool'],
    buckets: WAKE_BUCKETS,
    registers,
  });
  const tools = new Counter({ name: 'agentvm_tool_calls_total', help: 'Tool calls through the MCP proxy by decision: allowed, denied, approval (sent to a person; then also counted as allowed or denied)', labelNames: ['profile', 'decision'], registers });
  const approvals = new Counter({ name: 'agentvm_approvals_total', help: 'Approval requests by how they ended: approved, denied, timeout', labelNames: ['profile', 'outcome'], registers });
  const egress = new Counter({ name: 'agentvm_egress_attempts_total', help: 'Egress relay attempts by decision (allow, deny)', labelNames: ['profile', 'decision'], registers });
  const healing = new Counter({ name: 'agentvm_self_healing_escalations_total', help: 'Self-healing escalations by level (reload, restart, replace)', labelNames: ['profile', 'level'], registers });
  const snapshotBytes = new Gauge({ name: 'agentvm_snapshot_bytes', help: 'Size of the last workspace snapshot taken by this process', labelNames: ['profile'], registers });
  const snapshotAt = new Map<string, number>();
  new Gauge({
    name: 'agentvm_snapshot_age_seconds',
    help: 'Seconds since the last workspace snapshot taken by this process',
    labelNames: ['profile'],
    registers,
    collect() {
      for (const [p, at] of snapshotAt) this.set({ profile: p }, Math.max(0, (now() - at) / 1000));
    },
  });
  const tokens = new Counter({ name: 'agentvm_model_tokens_total', help: 'Model tokens through the model relay, by profile, provider and kind (input, output, cache_read, cache_write)', labelNames: ['profile', 'provider', 'kind'], registers });
  const delivery = new Counter({ name: 'agentvm_delivery_failures_total', help: 'Messages a platform adapter could not deliver, by platform and kind (reply, notice, progress, partial)', labelNames: ['platform', 'kind'], registers });

  if (sources) {
    new Gauge({
      name: 'agentvm_sandboxes',
      help: 'Agent sandboxes as recorded, by state',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        const rows = await sources.sandboxesByState().catch(() => []);
        for (const r of rows) this.set({ state: r.state }, r.count);
      },
    });
    // One query fills both gauges: `agentvm_queue_depth` is collected first (registration order)
    // and starts it; `agentvm_turns_running` reads the same answer.
    type Row = { profile: string; status: string; count: number };
    let last: Promise<Row[]> | undefined;
    const fill = (g: Gauge, status: string, rows: Row[]) => {
      g.reset();
      for (const r of rows) if (r.status === status) g.inc({ profile: profile(r.profile) }, r.count);
    };
    new Gauge({
      name: 'agentvm_queue_depth',
      help: 'Events waiting for a turn (status queued), per profile',
      labelNames: ['profile'],
      registers,
      async collect() {
        last = sources.eventsByStatus().catch(() => []);
        fill(this, 'queued', await last);
      },
    });
    new Gauge({
      name: 'agentvm_turns_running',
      help: 'Turns running now (status running), per profile',
      labelNames: ['profile'],
      registers,
      async collect() {
        fill(this, 'running', await (last ?? sources.eventsByStatus().catch(() => [])));
      },
    });
    new Gauge({
      name: 'agentvm_approvals_pending',
      help: 'Tool calls waiting for a person (pending, unexpired)',
      registers,
      async collect() {
        const n = await sources.approvalsPending().catch(() => undefined);
        if (n !== undefined) this.set(n);
      },
    });
  }

  return {
    turnFinished(p, pf, outcome, seconds) {
      turns.inc({ profile: profile(p), platform: platform(pf), outcome });
      if (seconds !== undefined && Number.isFinite(seconds)) turnSeconds.observe({ profile: profile(p), outcome }, Math.max(0, seconds));
    },
    wake(p, kind, ms, pool) {
      wakeSeconds.observe({ profile: profile(p), kind, pool }, Math.max(0, ms) / 1000);
    },
    toolCall(p, decision) {
      tools.inc({ profile: profile(p), decision });
    },
    approvalSettled(p, outcome) {
      approvals.inc({ profile: profile(p), outcome });
    },
    egress(p, decision) {
      egress.inc({ profile: profile(p), decision });
    },
    selfHealing(p, level) {
      healing.inc({ profile: profile(p), level });
    },
    snapshotTaken(p, bytes, atMs) {
      const id = profile(p);
      snapshotBytes.set({ profile: id }, bytes);
      snapshotAt.set(id, atMs ?? now());
    },
    modelTokens(p, provider, u) {
      const labels = { profile: profile(p), provider: PROVIDERS.has(provider) ? provider : 'other' };
      const add = (kind: string, n: number) => {
        if (Number.isFinite(n) && n > 0) tokens.inc({ ...labels, kind }, n);
      };
      add('input', u.inputTokens);
      add('output', u.outputTokens);
      add('cache_read', u.cacheReadTokens);
      add('cache_write', u.cacheWriteTokens);
    },
    deliveryFailed(pf, kind) {
      delivery.inc({ platform: platform(pf), kind });
    },
  };
}

/**
 * The model relay's `onEvent`, counting tokens of every `usage` event (the relay's other events
 * are left to the caller). For the lead to wire: `onEvent: modelRelayMetrics(metrics, other)`.
 */
export function modelRelayMetrics(
  metrics: Metrics,
  next?: (event: { type: string }) => void | Promise<void>,
): (event: { type: string; profile?: string; provider?: string; usage?: TokenUsage }) => void | Promise<void> {
  return (event) => {
    if (event.type === 'usage' && event.profile && event.provider && event.usage) metrics.modelTokens(event.profile, event.provider, event.usage);
    return next?.(event);
  };
}

/** The wake kind for a handle: `restored` wins over the action, since it is what the wake cost. */
export function wakeKind(handle: { action: Exclude<WakeKind, 'restored'>; restored: boolean }): WakeKind {
  return handle.restored ? 'restored' : handle.action;
}

/** The channels' health as `registerChannelMetrics` reads it at scrape time (src/adapters/health.ts's ChannelHealth). */
export interface ChannelMetricSource {
  /** Platforms whose credentials are checked (each gets a 0 or 1). */
  platforms(): string[];
  channels: {
    unhealthy(): Array<{ platform: string }>;
    failures(): Array<{ platform: string; kind: string; step: string; code: string; shown: boolean; count: number }>;
  };
}

/**
 * Registers the channels' series, read from `source` at scrape time: `agentvm_channel_unhealthy`
 * (1 while a platform's credentials failed or its adapter did not start, e.g. served with
 * `--degraded`; 0 otherwise) and `agentvm_delivery_step_failures_total` (every step an adapter
 * reported failed, by platform, kind, step, the platform's code and whether a note reached the
 * thread; the source bounds the label sets).
 */
export function registerChannelMetrics(registry: Registry, source: ChannelMetricSource): void {
  new Gauge({
    name: 'agentvm_channel_unhealthy',
    help: 'A platform whose credentials were refused or whose adapter did not start (1), as /readyz reports it; 0 when healthy',
    labelNames: ['platform'],
    registers: [registry],
    collect() {
      this.reset();
      const bad = new Set(source.channels.unhealthy().map((u) => u.platform));
      for (const p of new Set([...source.platforms(), ...bad])) this.set({ platform: p }, bad.has(p) ? 1 : 0);
    },
  });
  new Counter({
    name: 'agentvm_delivery_step_failures_total',
    help: 'Delivery steps a platform adapter reported failed (a refused file, a missing scope, a retried post), by platform, kind, step, code and whether a note reached the thread',
    labelNames: ['platform', 'kind', 'step', 'code', 'shown'],
    registers: [registry],
    collect() {
      this.reset();
      for (const f of source.channels.failures()) this.inc({ platform: f.platform, kind: f.kind, step: f.step, code: f.code, shown: String(f.shown) }, f.count);
    },
  });
}
