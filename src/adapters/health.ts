/**
 * The channels' health as the operator sees it (not an adapter itself): each platform's
 * credential check (`agent-vm up` refuses to start on a failed one; with `--degraded` the
 * platform is served as unhealthy and `/readyz` says so), a platform that failed to start, and
 * delivery failures counted by platform, kind, step and code (every adapter's
 * `onDeliveryFailure` feeds `deliveryFailed`).
 *
 * For the metrics: `unhealthy()` (a gauge per platform) and `failures()` (a counter per label
 * set; codes are the platforms' own short strings, bounded by `MAX_SERIES`).
 *
 * `checkChannels` runs the checks at start; `channelChecks` are the readiness checks.
 *
 * Deliberately left out: any prom-client dependency (src/metrics.ts owns the registry).
 */
import { AgentVmError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ChannelAdapter, CredentialCheck, DeliveryFailure, Platform } from './types.js';

const MAX_SERIES = 500;

export interface ChannelHealth {
  /** Records a credential check (the last one per platform counts). */
  credentials(check: CredentialCheck): void;
  /** A platform's adapter failed to start (e.g. the Discord gateway refused the token). */
  startFailed(platform: Platform, setting: string, reason: string): void;
  /** The adapters' `onDeliveryFailure`. */
  deliveryFailed(f: DeliveryFailure): void;
  /** Platforms that are not healthy, and why (the setting to fix). */
  unhealthy(): Array<{ platform: Platform; setting: string; reason: string }>;
  /** One platform's problem, if it has one. */
  problem(platform: Platform): { setting: string; reason: string } | undefined;
  /** Delivery failures so far, one row per label set. */
  failures(): Array<Omit<DeliveryFailure, 'retryable' | 'shown'> & { shown: boolean; count: number }>;
}

export function createChannelHealth(): ChannelHealth {
  const problems = new Map<Platform, { setting: string; reason: string }>();
  const counts = new Map<string, { platform: Platform; kind: DeliveryFailure['kind']; step: string; code: string; shown: boolean; count: number }>();
  return {
    credentials(check) {
      if (check.ok) problems.delete(check.platform);
      else problems.set(check.platform, { setting: check.setting, reason: check.reason });
    },
    startFailed(platform, setting, reason) {
      problems.set(platform, { setting, reason });
    },
    deliveryFailed(f) {
      const code = f.code.slice(0, 40);
      const key = [f.platform, f.kind, f.step, code, f.shown].join('\u0000');
      const row = counts.get(key);
      if (row) row.count += 1;
      else if (counts.size < MAX_SERIES) counts.set(key, { platform: f.platform, kind: f.kind, step: f.step, code, shown: f.shown, count: 1 });
    },
    unhealthy: () => [...problems].map(([platform, p]) => ({ platform, ...p })),
    problem: (platform) => problems.get(platform),
    failures: () => [...counts.values()].map((r) => ({ ...r })),
  };
}

/** Slack → "Slack": how a platform is named in one-line messages. */
export function platformName(p: Platform): string {
  return p === 'clickup' ? 'ClickUp' : p.charAt(0).toUpperCase() + p.slice(1);
}

/**
 * Asks every platform whether its credentials work, before anything is served. `require`: the
 * first failure stops the start with one line naming the platform and the setting. `degraded`:
 * failures are recorded (unhealthy in /readyz), and a platform whose adapter then fails to start
 * is recorded too instead of stopping the others.
 */
export async function checkChannels(all: ChannelAdapter[], channels: ChannelHealth, mode: 'require' | 'degraded', logger: Logger): Promise<void> {
  const adapters = all.filter((a) => a.checkCredentials);
  const checks: CredentialCheck[] = await Promise.all(adapters.map((a) => a.checkCredentials!()));
  for (const c of checks) {
    channels.credentials(c);
    if (c.ok) logger.info({ platform: c.platform, identity: c.identity }, 'platform credentials accepted');
  }
  const failed = checks.filter((c): c is Extract<CredentialCheck, { ok: false }> => !c.ok);
  if (failed.length === 0) return;
  if (mode === 'require') {
    const f = failed[0]!;
    throw new AgentVmError('credentials_refused', `${platformName(f.platform)}: ${f.reason}; fix ${f.setting} (or start with --degraded to serve the other channels)`, { status: 502 });
  }
  for (const f of failed) logger.error({ platform: f.platform, setting: f.setting, reason: f.reason }, 'platform credentials failed; serving it degraded (unhealthy in /readyz)');
  for (const a of adapters) {
    if (!a.start || !channels.problem(a.platform)) continue;
    const start = a.start.bind(a);
    a.start = async () => {
      try {
        await start();
      } catch (err) {
        channels.startFailed(a.platform, channels.problem(a.platform)!.setting, err instanceof Error ? err.message : String(err));
        logger.error({ platform: a.platform, err }, 'platform adapter did not start; serving the others');
      }
    };
  }
}

/** Readiness checks (`/readyz`), one per platform that checks credentials: failing while it has a problem. */
export function channelChecks(adapters: ChannelAdapter[], channels: ChannelHealth): Array<{ name: string; check(): Promise<void> }> {
  return adapters
    .filter((a) => a.checkCredentials)
    .map((a) => ({
      name: `channel:${a.platform}`,
      check: async () => {
        const p = channels.problem(a.platform);
        if (p) throw new Error(`${p.reason}; fix ${p.setting}`);
      },
    }));
}
