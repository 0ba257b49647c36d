/**
 * Composition: config → store, driver, profiles, adapters, gateway, HTTP app. The only module
 * that knows every seam; each piece stays ignorant of the others.
 */
import type { Hono } from 'hono';
import { createClickUpAdapter } from './adapters/clickup/index.js';
import { createDiscordAdapter } from './adapters/discord/index.js';
import { createLocalAdapter } from './adapters/local/index.js';
import { createSlackAdapter } from './adapters/slack/index.js';
import { channelChecks, checkChannels, createChannelHealth, type ChannelHealth } from './adapters/health.js';
import { canHold, type ApprovalDesk, type ChannelAdapter, type DeliveryFailure, type Intake, type TurnWatcher } from './adapters/types.js';
import type { Config } from './config.js';
import type { Context } from './context.js';
import { AgentVmError } from './errors.js';
import type { Store } from './store/index.js';
import { createGateway, type Gateway, type GatewayOptions, type TurnPolicy } from './gateway/index.js';
import { loadProfiles, type LoadedProfiles } from './governance/profiles.js';
import { registerChannelMetrics } from './metrics.js';
import { createObservability, mountOperator } from './operator/mount.js';
import type { Logger } from './log.js';
import { createApp } from './server.js';
import { createBackgroundWork } from './jobs/wire.js';

export interface Running {
  gateway: Gateway;
  loaded: LoadedProfiles;
  app: Hono;
  /** Each platform's credentials and delivery failures (for /readyz and the metrics). */
  channels: ChannelHealth;
  stop(): Promise<void>;
}

export interface AdapterDeps {
  approvals: ApprovalDesk;
  intake: Intake;
  watcher: TurnWatcher;
  logger: Logger;
  store: Store;
  /** Every adapter's delivery failures go here (the channel health). */
  onDeliveryFailure?: (f: DeliveryFailure) => void;
}

/**
 * The local channel, plus every platform whose settings are present. A platform with some but
 * not all of its required settings is a startup error, not a silently missing channel.
 */
export function platformAdapters(config: Config, deps: AdapterDeps): ChannelAdapter[] {
  const { intake, logger } = deps;
  // What every platform adapter shares: thread cursors, how much history, where failures go.
  const shared = {
    threads: deps.store.threads,
    threadLimits: config.threadContext,
    ...(deps.onDeliveryFailure ? { onDeliveryFailure: deps.onDeliveryFailure } : {}),
  };
  const out: ChannelAdapter[] = [createLocalAdapter({ intake, watcher: deps.watcher, apiToken: config.apiToken, logger })];
  const s = config.slack;
  if (s.botToken || s.signingSecret || s.appToken) {
    if (!s.botToken || !(s.signingSecret || s.appToken)) {
      throw new AgentVmError('config_invalid', 'Slack needs SLACK_BOT_TOKEN and either SLACK_SIGNING_SECRET (Events API) or SLACK_APP_TOKEN (Socket Mode)', { status: 400 });
    }
    out.push(createSlackAdapter({ signingSecret: s.signingSecret ?? '', botToken: s.botToken, appToken: s.appToken, apiUrl: s.apiUrl, intake, logger, approvals: deps.approvals, feedback: deps.store.feedback, ...shared }));
  }
  const d = config.discord;
  if (d.publicKey || d.applicationId || d.botToken) {
    if (!d.publicKey || !d.applicationId) {
      throw new AgentVmError('config_invalid', 'Discord needs DISCORD_PUBLIC_KEY and DISCORD_APPLICATION_ID (and DISCORD_BOT_TOKEN for @mentions)', { status: 400 });
    }
    out.push(createDiscordAdapter({ publicKey: d.publicKey, applicationId: d.applicationId, botToken: d.botToken, apiUrl: d.apiUrl, intake, logger, approvals: deps.approvals, ...shared }));
  }
  const c = config.clickup;
  if (c.token || c.webhookSecret) {
    if (!c.token) throw new AgentVmError('config_invalid', 'ClickUp needs CLICKUP_TOKEN (and CLICKUP_WEBHOOK_SECRET or webhooks registered with agent-vm clickup register-webhook)', { status: 400 });
    // ClickUp's comments are stored before their task is looked up (acknowledgement first).
    if (!canHold(intake)) throw new AgentVmError('intake_cannot_hold', 'the ClickUp adapter needs an intake that can hold deliveries (the gateway\'s does)', { status: 500 });
    out.push(
      createClickUpAdapter({
        token: c.token,
        webhookSecret: c.webhookSecret,
        secretFor: (id) => deps.store.gateway.webhookSecret('clickup', id),
        apiUrl: c.apiUrl,
        intake,
        logger,
        progressAfterMs: c.progressAfterSeconds * 1000,
        ...shared,
      }),
    );
  }
  return out;
}

export async function startGatewayApp(
  ctx: Context,
  opts: {
    units: 'all' | 'none' | string[];
    policy?: Partial<TurnPolicy>;
    loaded?: LoadedProfiles;
    adapters?: typeof platformAdapters;
    approvalTimeoutMs?: number;
    /** Unit tuning for tests (grace periods, lease length). */
    unit?: GatewayOptions['unit'];
    /** Fire profile schedules in this process (default true; `send` without a server says false). */
    schedules?: boolean;
    /**
     * Check each platform's credentials before serving: `require` refuses to start on a failed
     * check (an AgentVmError naming the platform and setting), `degraded` serves the platform as
     * unhealthy (/readyz). Absent: no check (tests, `send`).
     */
    credentials?: 'require' | 'degraded';
  },
): Promise<Running> {
  const { config, logger } = ctx;
  const loaded = opts.loaded ?? (await loadProfiles(config.profilesDir));
  for (const bad of loaded.invalid) {
    logger.warn({ file: bad.file, issues: bad.issues.length }, 'profile manifest is invalid and will not be served; run agent-vm profiles validate');
  }
  const obs = createObservability(ctx.store);
  const channels = createChannelHealth();
  const work = createBackgroundWork(ctx, () => gateway);
  const gateway = createGateway({
    jobs: work.jobs,
    metrics: obs.metrics,
    config,
    store: ctx.store,
    driver: ctx.driver,
    logger,
    loaded,
    units: opts.units,
    ...(opts.unit ? { unit: opts.unit } : {}),
    policy: opts.policy,
    approvalTimeoutMs: opts.approvalTimeoutMs ?? config.approvalTimeoutSeconds * 1000,
    adapters: (deps) => (opts.adapters ?? platformAdapters)(config, { ...deps, logger, store: ctx.store, onDeliveryFailure: (f) => channels.deliveryFailed(f) }),
  });
  registerChannelMetrics(obs.registry, { platforms: () => [...gateway.adapters.values()].filter((a) => a.checkCredentials).map((a) => a.platform), channels });
  const app = createApp({
    logger,
    registry: obs.registry,
    checks: [
      { name: 'database', check: async () => void (await ctx.store.agents.list()) },
      { name: 'sandbox', check: async () => void (await ctx.driver.list()) },
      ...channelChecks([...gateway.adapters.values()], channels),
    ],
  });
  if (opts.credentials) {
    await checkChannels([...gateway.adapters.values()], channels, opts.credentials, logger).catch(async (err: unknown) => {
      await gateway.stop().catch(() => undefined);
      throw err;
    });
  }
  // The operator routes take the admin token (operator/auth.ts); the local channel guards only
  // its own POST /v1/messages with the API token.
  mountOperator(app, { config, store: ctx.store, driver: ctx.driver, gateway, metrics: obs.metrics, logger, snapshots: ctx.snapshots });
  for (const a of gateway.adapters.values()) if (a.routes) app.route('/', a.routes);
  await gateway.start();
  await work.start({ schedules: opts.schedules !== false });
  return { gateway, loaded, app, channels, stop: async () => void (await Promise.allSettled([work.stop(), gateway.stop()])) };
}

