/**
 * `agent-vm release plan|apply|rollback|ls` and `agent-vm status` (drift). Plan exits 0 with
 * nothing to do and 1 with changes pending; status exits 1 on drift (for an operator's cron).
 */
import os from 'node:os';
import type { Command } from 'commander';
import type { Context } from '../context.js';
import { AgentVmError } from '../errors.js';
import { createAuditLog } from '../governance/audit.js';
import { loadProfiles } from '../governance/profiles.js';
import { driftReport, formatDrift } from '../releases/drift.js';
import { formatPlan } from '../releases/plan.js';
import { createReleaseService, type ReleaseService } from '../releases/service.js';
import { releaseRepo } from '../store/releases.js';
import { printable } from '../text.js';
import { out, withContext } from './common.js';

function operator(): string {
  try {
    return `cli:${os.userInfo().username}`;
  } catch {
    return 'cli:unknown';
  }
}

export function releaseServiceFor(ctx: Context): ReleaseService {
  return createReleaseService({
    store: ctx.store,
    driver: ctx.driver,
    audit: createAuditLog(ctx.store.audit),
    logger: ctx.logger,
    image: ctx.config.image,
    runtime: ctx.config.runtime,
    profiles: async () => (await loadProfiles(ctx.config.profilesDir)).profiles,
    invalid: async () => (await loadProfiles(ctx.config.profilesDir)).invalid.flatMap((f) => f.issues.map((i) => (i.path ? `${f.file}: ${i.path}: ${i.message}` : `${f.file}: ${i.message}`))),
    canaryTurns: ctx.config.canaryTurns,
  });
}

const when = (iso: string) => iso.replace('T', ' ').slice(0, 19);

export function registerReleaseCommands(program: Command): void {
  const release = program.command('release').description('releases: exact image digests, blue-green slots, rollback, canary');
  release
    .command('plan [profiles...]', { isDefault: true })
    .description('what a release would change per agent (dry run); exits 0 with nothing to do, 1 with changes pending')
    .action((profiles: string[] | undefined) =>
      withContext(async (ctx) => {
        const items = await releaseServiceFor(ctx).plan(profiles);
        for (const l of formatPlan(items)) out(l);
        if (items.length === 0) out('no valid profiles');
        if (items.some((i) => i.changes.length > 0 || i.error)) process.exitCode = 1;
      }),
    );
  release
    .command('apply [profiles...]')
    .description('release what the plan shows: health-checked in the inactive slot, then swapped in at a turn boundary')
    .option('--yes', 'carry it out (without it, apply only prints the plan)')
    .option('--canary <channel>', 'serve the new release to this conversation or channel first (required at L3 and above)')
    .option('--why <text>', 'the reason, recorded with the release')
    .action((profiles: string[] | undefined, o: { yes?: boolean; canary?: string; why?: string }) =>
      withContext(async (ctx) => {
        const svc = releaseServiceFor(ctx);
        if (!o.yes) {
          for (const l of formatPlan(await svc.plan(profiles))) out(l);
          throw new AgentVmError('usage', 'nothing was applied: add --yes to carry out this plan', { status: 400 });
        }
        const results = await svc.apply(profiles, { who: operator(), ...(o.why ? { why: o.why } : {}), ...(o.canary ? { canary: o.canary } : {}) });
        let failed = 0;
        for (const r of results) {
          const health = r.health ? ` (health ${r.health.ok ? 'ok' : 'failed'} in ${r.health.ms} ms)` : '';
          const what = {
            nothing: 'up to date, nothing to do',
            swapped: `${r.release} serves from slot ${r.slot}${health}${r.replaced ? `; ${r.replaced} is kept stopped in the other slot for rollback` : ''}`,
            recorded: `${r.release} recorded (only gateway-side manifest parts changed; the sandbox was not restarted)`,
            canary: `${r.release} serves the canary from slot ${r.slot}${health}; promoted after ${ctx.config.canaryTurns} healthy turns`,
            failed: `${r.release ?? 'release'} FAILED, nothing changed: ${printable(r.why ?? '', 500)}`,
            refused: `refused: ${printable(r.why ?? '', 500)}`,
          }[r.outcome];
          if (r.outcome === 'failed' || r.outcome === 'refused') failed++;
          out(`${r.profile}: ${what}`);
        }
        if (failed > 0) process.exitCode = 1;
      }),
    );
  release
    .command('rollback <profile>')
    .description('return the agent to the release its current one replaced (or end its canary)')
    .option('--why <text>', 'the reason, recorded')
    .action((profile: string, o: { why?: string }) =>
      withContext(async (ctx) => {
        const r = await releaseServiceFor(ctx).rollback(profile, { who: operator(), ...(o.why ? { why: o.why } : {}) });
        const how = { swap: 'swapped back to the kept slot', recreated: 're-created from its recorded digest', canary: 'canary ended; the active release is unchanged' }[r.how];
        out(`${r.profile}: ${r.from} → ${r.to}: ${how} in ${r.ms} ms`);
      }),
    );
  release
    .command('ls [profile]')
    .description('releases, newest first')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 50)
    .action((profile: string | undefined, o: { limit: number }) =>
      withContext(async (ctx) => {
        const list = await releaseServiceFor(ctx).list(profile, o.limit);
        out(['RELEASE', 'STATUS', 'SLOT', 'IMAGE', 'AGENT', 'RUNTIME', 'WHEN', 'WHO', 'ROLLBACK TO', 'WHY'].join('\t'));
        for (const r of list) {
          const why = r.outcome.why ?? r.reason ?? '';
          out([r.id, r.status, r.slot, r.imageDigest.slice(0, 19), `${printable(r.agentProgram, 60)}${r.agentVersion ? `@${printable(r.agentVersion, 40)}` : ''}`, r.runtime, when(r.createdAt), printable(r.createdBy, 60), r.rollbackTarget ?? '-', printable(String(why), 200)].join('\t'));
        }
      }),
    );

  program
    .command('status')
    .description('every agent: its release, slot and state, and drift between what is declared and what runs; exits 1 on drift')
    .action(() =>
      withContext(async (ctx) => {
        const profiles = (await loadProfiles(ctx.config.profilesDir)).profiles;
        const reports = await driftReport(profiles, { repo: releaseRepo(ctx.store.db), driver: ctx.driver, image: ctx.config.image, runtime: ctx.config.runtime });
        for (const l of formatDrift(reports)) out(l);
        const drifted = reports.filter((r) => r.drift.length > 0);
        if (drifted.length > 0) {
          process.stderr.write(`agent-vm: drift on ${drifted.length} agent(s): ${drifted.map((r) => r.agent).join(', ')}\n`);
          process.exitCode = 1;
        }
      }),
    );
}
