/**
 * `agent-vm tools pins [profile]` and `agent-vm tools repin <profile> <server.tool>`: the tool
 * pins of every profile (or one), with the difference between the pinned definition and a changed
 * one that is hidden until someone re-pins it; and that re-pin, audited as `cli:<user>`. Straight
 * on the database, so it works beside running units on Postgres: they pick the re-pin up on their
 * next look at the tool. With the embedded PGlite database a running `agent-vm up` holds it; use
 * the operator API (`GET /v1/pins`, `POST /v1/pins/<profile>/<server.tool>/repin`) then, or
 * `--server <url>`, which makes exactly those calls.
 */
import os from 'node:os';
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { createAuditLog } from '../governance/audit.js';
import { pinView, repinQuarantined, type PinView } from '../governance/mcp-pins.js';
import { openStore, type Store } from '../store/index.js';
import { printable } from '../text.js';
import { out } from './common.js';
import { operatorClient, seg } from './remote.js';

async function withStore<T>(fn: (store: Store) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    await store.migrate();
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Who runs this command, as the audit trail records it. */
function operator(): string {
  try {
    return `cli:${os.userInfo().username}`;
  } catch {
    return 'cli:unknown';
  }
}

function printPin(p: PinView): void {
  const by = p.pinnedBy ?? 'first use';
  out([printable(p.profile, 64), printable(p.tool, 128), p.state, p.hash.slice(0, 12), p.pinnedAt, printable(by, 64)].join('\t'));
  if (p.state !== 'quarantined') return;
  out(`  seen ${p.seen!.hash.slice(0, 12)} at ${p.seen!.at ?? '?'}; hidden and denied until: agent-vm tools repin ${printable(p.profile, 64)} ${printable(p.tool, 128)}`);
  if (p.diff.length === 0) out('  (the pinned definition predates stored definitions; no diff to show)');
  // Tool servers write these definitions: every line is escaped before it reaches the terminal.
  for (const line of p.diff) out(`  ${printable(line, 500)}`);
}

export function registerToolCommands(program: Command): void {
  const tools = program.command('tools').description('tool definitions pinned per profile');
  tools
    .command('pins [profile]')
    .description('list pinned tools, and the changed definitions hidden until re-pinned (with a diff)')
    .option('--json', 'one JSON object per line')
    .option('--server <url>', 'ask a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action(async (profile: string | undefined, o: { json?: boolean; server?: string }) => {
      const list = o.server
        ? async () => (await operatorClient(loadConfig(), o.server!).get<{ pins: PinView[] }>('/v1/pins', { profile })).pins
        : () => withStore(async (store) => (await store.pins.list(profile)).map(pinView));
      const pins = await list();
      if (o.json) {
        for (const p of pins) out(JSON.stringify(p));
        return;
      }
      if (pins.length === 0) return out(profile ? `no pinned tools for profile ${printable(profile, 64)}` : 'no pinned tools');
      out(['PROFILE', 'TOOL', 'STATE', 'HASH', 'PINNED AT', 'PINNED BY'].join('\t'));
      for (const p of pins) printPin(p);
    });
  tools
    .command('repin <profile> <tool>')
    .description('accept the changed definition of <server.tool> as its new pin (audited)')
    .option('--expect <hash>', 'only if the changed definition is still this one (its hash, from tools pins --json)')
    .option('--server <url>', 're-pin through a running agent-vm (operator API; audited as local:api)')
    .action(async (profile: string, tool: string, o: { expect?: string; server?: string }) => {
      const pin = o.server
        ? (await operatorClient(loadConfig(), o.server).post<{ pin: PinView }>(`/v1/pins/${seg(profile)}/${seg(tool)}/repin`, o.expect ? { expect: o.expect } : {})).pin
        : await withStore((store) => repinQuarantined({ pins: store.pins, audit: createAuditLog(store.audit) }, profile, tool, operator(), o.expect));
      out(`${printable(profile, 64)} ${printable(tool, 128)}: re-pinned to ${pin.hash.slice(0, 12)}`);
    });
}
