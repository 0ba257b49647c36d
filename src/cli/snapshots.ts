/**
 * `agent-vm agents snapshots <agent>` and `agent-vm agents restore <agent>`: an agent's workspace
 * snapshot generations, each verified (size, sha256, safe tar) as it is listed; and the
 * replacement of its workspace by one of them. Both change nothing unless given `--apply`:
 * without it they print what would happen. Changes are audited as `cli:<user>`.
 */
import os from 'node:os';
import type { Command } from 'commander';
import type { Context } from '../context.js';
import { AgentVmError } from '../errors.js';
import { createAuditLog } from '../governance/audit.js';
import { chooseGeneration, verifyGeneration } from '../sandbox/snapshots/index.js';
import { assertAgentId } from '../sandbox/spec.js';
import { printable } from '../text.js';
import { out, withContext } from './common.js';

function generationNumber(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new AgentVmError('usage', `--generation must be a whole number from 1, got ${JSON.stringify(v)}`, { status: 400 });
  return n;
}

function operator(): string {
  try {
    return `cli:${os.userInfo().username}`;
  } catch {
    return 'cli:unknown';
  }
}

const mb = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${n} B`);

async function record(ctx: Context, action: string, decision: string, agent: string, data: Record<string, unknown>, reason?: string): Promise<void> {
  await createAuditLog(ctx.store.audit).record({ action, decision, subject: agent, reason: reason ?? null, data: { by: operator(), ...data } });
}

async function listSnapshots(ctx: Context, agent: string, o: { json?: boolean }): Promise<void> {
  const gens = await ctx.snapshots.list(agent);
  const rows = [];
  for (const g of gens) {
    const v = await verifyGeneration(ctx.snapshots, agent, g);
    rows.push({ generation: g.generation, manifest: g.manifest, status: v.ok ? 'ok' : v.reason });
  }
  if (o.json) {
    out(JSON.stringify({ agent, store: ctx.snapshots.location, keep: ctx.snapshots.keep, generations: rows }, null, 2));
    return;
  }
  if (rows.length === 0) {
    out(`${agent}: no snapshots in ${ctx.snapshots.location}`);
    return;
  }
  out(['GEN', 'CREATED', 'SIZE', 'FILES', 'SHA256', 'WHY', 'SESSIONS', 'CHECK'].join('\t'));
  for (const r of rows) {
    const m = r.manifest;
    out([r.generation, m?.createdAt ?? '-', m ? mb(m.bytes) : '-', m?.files ?? '-', m ? m.sha256.slice(0, 12) : '-', printable(m?.reason ?? '-', 32), m?.sessions?.length ?? 0, printable(r.status, 300)].join('\t'));
  }
  out(`${rows.filter((r) => r.status === 'ok').length} of ${rows.length} good; the newest ${ctx.snapshots.keep} are kept in ${ctx.snapshots.location}`);
}

async function deleteSnapshots(ctx: Context, agent: string, o: { generation?: number; apply?: boolean }): Promise<void> {
  const gens = await ctx.snapshots.list(agent);
  const doomed = o.generation === undefined ? gens : gens.filter((g) => g.generation === o.generation);
  const what = o.generation === undefined ? `all ${doomed.length} snapshot generation(s)` : `snapshot generation ${o.generation}`;
  if (o.generation !== undefined && doomed.length === 0) throw new AgentVmError('snapshot_missing', `agent ${agent} has no snapshot generation ${o.generation}`, { status: 404 });
  if (!o.apply) {
    out(`would delete ${what} of ${agent} from ${ctx.snapshots.location} for good${o.generation === undefined ? '; a later wake without its volume would start with an empty workspace' : ''}`);
    out('run again with --apply to do it');
    return;
  }
  const n = await ctx.snapshots.remove(agent, o.generation);
  await record(ctx, 'snapshot.delete', 'ok', agent, { generation: o.generation ?? 'all', deleted: n });
  out(`${agent}: deleted ${n} snapshot generation(s) from ${ctx.snapshots.location}`);
}

async function restore(ctx: Context, agent: string, o: { generation?: number; apply?: boolean; snapshot: boolean }): Promise<void> {
  const status = await ctx.driver.status(agent);
  if (!o.apply) {
    const choice = await chooseGeneration(ctx.snapshots, agent, { purpose: 'restore', ...(o.generation !== undefined ? { generation: o.generation } : {}) });
    if (!choice.verified) throw new AgentVmError('snapshot_missing', `agent ${agent} has no snapshots in ${ctx.snapshots.location}`, { status: 404 });
    const m = choice.verified.manifest;
    await choice.verified.dispose();
    for (const s of choice.skipped) out(`would skip generation ${s.generation}: ${printable(s.reason, 300)}`);
    if (status.state === 'running' || status.state === 'paused') out(`would stop ${agent}'s sandbox (${status.state})`);
    if (o.snapshot && status.state !== 'missing') out(`would save the current workspace as a new generation first (reason pre-restore)`);
    out(`would replace ${agent}'s workspace with generation ${m.generation} (${m.createdAt}, ${mb(m.bytes)}, ${m.files} files, sha256 ${m.sha256.slice(0, 12)}, verified)`);
    out(`the sandbox stays stopped; the next message or \`agent-vm agents wake ${agent}\` starts it on that workspace`);
    out('run again with --apply to do it');
    return;
  }
  try {
    const r = await ctx.driver.restore(agent, { ...(o.generation !== undefined ? { generation: o.generation } : {}), snapshotFirst: o.snapshot, image: ctx.config.image });
    if (status.state !== 'missing') await ctx.store.agents.markSleeping(agent);
    await record(ctx, 'snapshot.restore', 'ok', agent, { generation: r.generation, sha256: r.sha256, skipped: r.skipped, savedAs: r.savedAs?.generation ?? null });
    for (const s of r.skipped) out(`skipped generation ${s.generation}: ${printable(s.reason, 300)}`);
    if (r.savedAs) out(`saved the replaced workspace as generation ${r.savedAs.generation} (${mb(r.savedAs.bytes)})`);
    out(`${agent}: workspace restored from generation ${r.generation} (${r.createdAt}); the sandbox is stopped until the next wake`);
  } catch (err) {
    await record(ctx, 'snapshot.restore', 'error', agent, { generation: o.generation ?? null, skipped: (err as { skipped?: unknown }).skipped ?? null }, (err as Error).message).catch(() => undefined);
    throw err;
  }
}

/** Adds `snapshots` and `restore` to the `agents` command group. */
export function registerSnapshotCommands(agents: Command): void {
  agents
    .command('snapshots <agent>')
    .description('list an agent\'s workspace snapshot generations, each verified; --delete removes them for good')
    .option('--json', 'print JSON')
    .option('--delete', 'delete the generations (all, or --generation N); dry run unless --apply')
    .option('--generation <n>', 'only this generation (with --delete)', generationNumber)
    .option('--apply', 'with --delete: really delete')
    .action((agent: string, o: { json?: boolean; delete?: boolean; generation?: number; apply?: boolean }) => {
      assertAgentId(agent);
      return withContext((ctx) => (o.delete ? deleteSnapshots(ctx, agent, o) : listSnapshots(ctx, agent, o)));
    });
  agents
    .command('restore <agent>')
    .description('replace an agent\'s workspace with a verified snapshot generation (newest good by default); dry run unless --apply')
    .option('--generation <n>', 'restore exactly this generation', generationNumber)
    .option('--apply', 'stop the sandbox and replace its workspace')
    .option('--no-snapshot', 'do not save the current workspace as a new generation first')
    .action((agent: string, o: { generation?: number; apply?: boolean; snapshot: boolean }) => {
      assertAgentId(agent);
      return withContext((ctx) => restore(ctx, agent, o));
    });
}
