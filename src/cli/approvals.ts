/**
 * `agent-vm approvals ls | approve <id> | deny <id>`: the operator's view of tool calls waiting
 * for a person, straight on the database (so it works beside unit processes on Postgres). With
 * the embedded PGlite database, a running `agent-vm up` holds it; use the local API
 * (`GET /v1/approvals`, `POST /v1/approvals/:id`) then.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { AgentVmError } from '../errors.js';
import { createApprovalBroker } from '../governance/approvals.js';
import { openStore, type Store } from '../store/index.js';
import { out } from './common.js';

async function withBroker<T>(fn: (broker: ReturnType<typeof createApprovalBroker>) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const store: Store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    await store.migrate();
    // This broker only reads and answers; it never makes requests, so its timeout is unused.
    return await fn(createApprovalBroker({ store: store.approvals, timeoutMs: 1 }));
  } finally {
    await store.close();
  }
}

export function registerApprovalCommands(program: Command): void {
  const approvals = program.command('approvals').description('tool calls waiting for a person');
  approvals
    .command('ls')
    .description('list pending approval requests')
    .option('--json', 'one JSON object per line')
    .action((o: { json?: boolean }) =>
      withBroker(async (b) => {
        const pending = await b.pending();
        if (o.json) {
          for (const p of pending) out(JSON.stringify({ id: p.id, profile: p.profile, tool: p.tool, eventId: p.eventId ?? null, approvers: p.approvers, expiresAt: p.expiresAt }));
          return;
        }
        if (pending.length === 0) return out('no pending approvals');
        out(['ID', 'PROFILE', 'TOOL', 'EXPIRES IN', 'APPROVERS'].join('\t'));
        for (const p of pending) {
          const left = Math.max(0, Math.round((p.expiresAt.getTime() - Date.now()) / 1000));
          out([p.id, p.profile, p.tool, `${left} s`, p.approvers.join(',') || '(operator only)'].join('\t'));
        }
      }),
    );
  for (const [verb, decision] of [['approve', 'approved'], ['deny', 'denied']] as const) {
    approvals
      .command(`${verb} <id>`)
      .description(`${verb} a pending request as the operator`)
      .action((id: string) =>
        withBroker(async (b) => {
          const r = await b.answer(id, decision);
          if (r.status !== 'answered') {
            throw new AgentVmError('approval_not_pending', `no pending approval ${id} (already answered, expired, or unknown); see agent-vm approvals ls`, { status: 404 });
          }
          out(`${id}: ${decision}`);
        }),
      );
  }
}
