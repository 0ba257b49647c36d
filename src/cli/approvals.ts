/**
 * `agent-vm approvals ls | approve <id> | deny <id>`: the operator's view of tool calls waiting
 * for a person, straight on the database (so it works beside unit processes on Postgres). With
 * the embedded PGlite database, a running `agent-vm up` holds it; use the local API
 * (`GET /v1/approvals`, `POST /v1/approvals/:id`) then, or `--server <url>`, which does exactly that.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { AgentVmError } from '../errors.js';
import { createApprovalBroker } from '../governance/approvals.js';
import { openStore, type Store } from '../store/index.js';
import { out } from './common.js';
import { operatorClient, seg } from './remote.js';

type Pending = { id: string; profile: string; tool: string; eventId?: string | null; approvers: string[]; expiresAt: Date };

/** Pending requests, from the database or (with --server) the operator API. */
async function pendingList(server: string | undefined, fn: (pending: Pending[]) => void): Promise<void> {
  if (!server) return withBroker(async (b) => fn(await b.pending()));
  const r = await operatorClient(loadConfig(), server).get<{ pending: Array<Omit<Pending, 'expiresAt'> & { expiresAt: string }> }>('/v1/approvals');
  fn(r.pending.map((p) => ({ ...p, expiresAt: new Date(p.expiresAt) })));
}

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
    .option('--server <url>', 'ask a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action((o: { json?: boolean; server?: string }) =>
      pendingList(o.server, (pending) => {
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
      .option('--server <url>', 'answer through a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
      .action(async (id: string, o: { server?: string }) => {
        if (o.server) {
          await operatorClient(loadConfig(), o.server)
            .post(`/v1/approvals/${seg(id)}`, { decision })
            .catch((err: unknown) => {
              throw err instanceof AgentVmError && err.status === 404
                ? new AgentVmError('approval_not_pending', `no pending approval ${id} (already answered, expired, or unknown); see agent-vm approvals ls`, { status: 404 })
                : err;
            });
          return out(`${id}: ${decision}`);
        }
        return withBroker(async (b) => {
          const r = await b.answer(id, decision);
          if (r.status !== 'answered') {
            throw new AgentVmError('approval_not_pending', `no pending approval ${id} (already answered, expired, or unknown); see agent-vm approvals ls`, { status: 404 });
          }
          out(`${id}: ${decision}`);
        });
      });
  }
}
