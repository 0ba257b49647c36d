/**
 * `agent-vm jobs run <profile> [--in path…] [--out path…] [--timeout s] -- cmd…`: an operator's
 * Tier-2 job, exactly as the profile's agent would run it with `agentvm.run_job` (same sandbox,
 * limits, egress and teardown; inputs from the agent's workspace, relative to /workspace; results
 * into its `/workspace/jobs/<id>/`). The CLI exits with the job's exit code (1 when it has none).
 * `agent-vm jobs ls` lists jobs; `agent-vm schedules ls` shows each schedule's next and last run.
 */
import os from 'node:os';
import type { Command } from 'commander';
import { AgentVmError } from '../errors.js';
import { createAuditLog } from '../governance/audit.js';
import { loadProfiles } from '../governance/profiles.js';
import { createJobRunner } from '../jobs/runner.js';
import type { JobResult } from '../jobs/types.js';
import { scheduleListing } from '../schedules/listing.js';
import { printable } from '../text.js';
import { out, printableLines, withContext } from './common.js';

function operator(): string {
  try {
    return `cli:${os.userInfo().username}`;
  } catch {
    return 'cli:unknown';
  }
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

function report(r: JobResult): void {
  const err = (l: string) => process.stderr.write(`${l}\n`);
  // The job's output is the job's: escaped like any text from a sandbox, one newline at the end.
  if (r.stdout) process.stdout.write(`${printableLines(r.stdout.replace(/\n$/, ''))}\n`);
  if (r.stderr) err(printableLines(r.stderr.replace(/\n$/, ''), '  '));
  err(`job ${r.id}: ${r.status}${r.exitCode !== null ? ` (exit ${r.exitCode})` : ''} on ${r.runtime ?? '?'} in ${r.durationMs} ms${r.truncated ? ', output truncated' : ''}`);
  for (const w of r.written) err(`result: ${printable(w, 1100)}`);
  for (const x of [...r.inputsRefused, ...r.refused]) err(`refused: ${printable(x.path, 1100)}: ${x.reason}: ${printable(x.detail, 300)}`);
  err(`teardown: ${r.teardown.verified ? 'verified' : `NOT verified (${printable(r.teardown.detail ?? '?', 300)}); the gateway's sweeper retries`}`);
  if (r.error) err(`error: ${printable(r.error, 1000)}`);
}

export function registerJobCommands(program: Command): void {
  const jobs = program.command('jobs').description('Tier-2 jobs: one-shot sandboxes for untrusted work');
  jobs
    .command('run <profile> <command...>')
    .description("run a command in a fresh one-shot sandbox with the profile's jobs settings")
    .option('--in <path>', "a file or directory of the agent's workspace to copy in (repeat)", collect, [])
    .option('--out <path>', "a result path, relative to the job's working directory, to copy back (repeat)", collect, [])
    .option('--timeout <seconds>', 'hard deadline (default: jobs.timeoutSeconds)')
    .option('--json', 'print the result as JSON')
    .action((profile: string, command: string[], o: { in: string[]; out: string[]; timeout?: string; json?: boolean }) =>
      withContext(async (ctx) => {
        const loaded = await loadProfiles(ctx.config.profilesDir);
        const byId = new Map(loaded.profiles.map((p) => [p.id, p]));
        const timeout = o.timeout === undefined ? undefined : Number(o.timeout);
        if (timeout !== undefined && !(timeout > 0)) throw new AgentVmError('usage', `--timeout must be a positive number of seconds, got ${JSON.stringify(o.timeout)}`, { status: 400 });
        const runner = createJobRunner({
          jobs: ctx.store.jobs, driver: ctx.driver, audit: createAuditLog(ctx.store.audit), logger: ctx.logger,
          config: { image: ctx.config.image, runtime: ctx.config.runtime, outbox: ctx.config.outbox, redisUrl: ctx.config.redisUrl },
          profiles: () => byId,
        });
        const ac = new AbortController();
        const onSignal = () => ac.abort();
        process.once('SIGINT', onSignal);
        try {
          const r = await runner.run(
            { profile, requestedBy: operator(), args: { command, inputs: o.in, outputs: o.out, ...(timeout !== undefined ? { timeoutSeconds: timeout } : {}) } },
            ac.signal,
          );
          if (o.json) out(JSON.stringify(r, null, 2));
          else report(r);
          process.exitCode = r.status === 'succeeded' ? 0 : r.exitCode && r.exitCode > 0 ? r.exitCode : 1;
        } finally {
          process.off('SIGINT', onSignal);
          await runner.close();
        }
      }),
    );
  jobs
    .command('ls')
    .description('recent jobs, newest first')
    .option('--profile <id>', 'only this profile')
    .option('-n <count>', 'how many', '20')
    .option('--json', 'print JSON')
    .action((o: { profile?: string; n: string; json?: boolean }) =>
      withContext(async ({ store }) => {
        const rows = await store.jobs.list({ ...(o.profile ? { profile: o.profile } : {}), limit: Math.min(1000, Math.max(1, Number(o.n) || 20)) });
        if (o.json) return out(JSON.stringify(rows.map(({ stdout: _o, stderr: _e, ...r }) => r), null, 2));
        out(['JOB', 'PROFILE', 'STATUS', 'EXIT', 'BY', 'IN/OUT BYTES', 'TEARDOWN', 'CREATED'].join('\t'));
        for (const r of rows) {
          out([r.id, r.profile, r.status, r.exitCode ?? '-', printable(r.requestedBy, 80), `${r.bytesIn}/${r.bytesOut}`, r.teardown, r.createdAt.toISOString()].join('\t'));
        }
      }),
    );

  program
    .command('schedules')
    .description('profile schedules')
    .command('ls')
    .description('every schedule with its next run and its last result')
    .option('--json', 'print JSON')
    .action((o: { json?: boolean }) =>
      withContext(async ({ config, store }) => {
        const loaded = await loadProfiles(config.profilesDir);
        const list = await scheduleListing(loaded.profiles, { scheduleRuns: store.scheduleRuns, events: store.gateway });
        if (o.json) return out(JSON.stringify(list, null, 2));
        out(['PROFILE', 'SCHEDULE', 'CRON', 'TZ', 'POST', 'NEXT', 'LAST TICK', 'LAST RUN', 'RESULT'].join('\t'));
        for (const s of list) {
          const last = s.last;
          out([s.profile, s.name, s.cron, s.timezone, printable(s.post, 200), s.next?.toISOString() ?? '-', last?.tick.toISOString() ?? '-', last ? `${last.status}${last.reason ? ` (${printable(last.reason, 200)})` : ''}` : '-', last?.result ?? '-'].join('\t'));
        }
      }),
    );
}
