/**
 * Gateway commands: `up`, `unit <profile>`, `send`, `transcript`, `audit tail|verify`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { serve } from '@hono/node-server';
import type { Command } from 'commander';
import { localConversation, localEvent, localMessageSchema } from '../adapters/local/index.js';
import type { TurnOutcome } from '../adapters/types.js';
import { startGatewayApp } from '../app.js';
import { loadConfig, type Config } from '../config.js';
import { openContext } from '../context.js';
import { AgentVmError, isAgentVmError } from '../errors.js';
import { createAuditLog } from '../governance/audit.js';
import { loadProfiles } from '../governance/profiles.js';
import { createLogger } from '../log.js';
import { cliLogger, out, withContext } from './common.js';

function onSignals(stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    void stop(signal).finally(() => process.exit(0));
  };
  process.once('SIGINT', () => handler('SIGINT'));
  process.once('SIGTERM', () => handler('SIGTERM'));
}

async function up(config: Config, o: { units: boolean }): Promise<void> {
  const logger = createLogger(config.logLevel);
  const ctx = await openContext(config, logger);
  const running = await startGatewayApp(ctx, { units: o.units ? 'all' : 'none' }).catch(async (err) => {
    await ctx.close();
    throw err;
  });
  const server = serve({ fetch: running.app.fetch, hostname: config.http.host, port: config.http.port });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new AgentVmError('port_in_use', `${config.http.host}:${config.http.port} is already in use; set AGENTVM_PORT`, { cause: err })
          : err,
      ),
    );
  }).catch(async (err) => {
    await running.stop();
    await ctx.close();
    throw err;
  });
  const units = [...running.gateway.units.keys()];
  logger.info({ host: config.http.host, port: config.http.port, db: ctx.store.kind, runtime: config.runtime, units }, 'agent-vm is up');
  out(`agent-vm listening on http://${config.http.host}:${config.http.port} (database: ${ctx.store.kind}, queue: ${running.gateway.queues.kind}, runtime: ${config.runtime})`);
  out(`serving ${units.length} profile(s): ${units.join(', ') || '(none here)'}; channels: ${[...running.gateway.adapters.keys()].join(', ')}`);
  if (running.loaded.invalid.length > 0) out(`not serving ${running.loaded.invalid.length} invalid manifest(s): ${running.loaded.invalid.map((i) => i.file).join(', ')}; run agent-vm profiles validate`);
  onSignals(async (signal) => {
    logger.info({ signal }, 'shutting down');
    server.close();
    await running.stop().catch((err) => logger.error({ err }, 'stop failed'));
    await ctx.close().catch((err) => logger.error({ err }, 'close failed'));
  });
}

async function unit(config: Config, profile: string): Promise<void> {
  const missing = [!config.databaseUrl && 'DATABASE_URL', !config.redisUrl && 'REDIS_URL'].filter(Boolean);
  if (missing.length > 0) {
    throw new AgentVmError(
      'unit_needs_shared_services',
      `a unit in its own process shares the database and queue with the front door: set ${missing.join(' and ')} (or run every unit in one process with agent-vm up)`,
      { status: 400 },
    );
  }
  const logger = createLogger(config.logLevel);
  const ctx = await openContext(config, logger);
  const running = await startGatewayApp(ctx, { units: [profile] }).catch(async (err) => {
    await ctx.close();
    throw err;
  });
  out(`unit ${profile} running (queue agent-gateway@${profile})`);
  onSignals(async (signal) => {
    logger.info({ signal, profile }, 'unit shutting down');
    await running.stop().catch((err) => logger.error({ err }, 'stop failed'));
    await ctx.close().catch((err) => logger.error({ err }, 'close failed'));
  });
}

interface SendOptions {
  conversation?: string;
  channel: string;
  out: string;
  server?: string;
  id?: string;
  json?: boolean;
}

/** Prints an outcome and writes files; returns the exit code. */
async function report(outcome: TurnOutcome, o: SendOptions, head: { eventId: string; conversation: string }): Promise<number> {
  if (outcome.kind === 'progress') {
    if (!o.json) process.stderr.write(`… ${outcome.text}\n`);
    return 0;
  }
  if (outcome.kind === 'notice') {
    if (o.json) out(JSON.stringify({ ...head, status: 'failed', text: outcome.text }));
    else process.stderr.write(`agent-vm: ${outcome.text}\n`);
    return 1;
  }
  const written: string[] = [];
  if (outcome.files.length > 0) {
    await mkdir(o.out, { recursive: true });
    for (const f of outcome.files) {
      // Names were validated when they left the sandbox; basename again so nothing escapes --out.
      const file = path.join(o.out, path.basename(f.name));
      await writeFile(file, f.data);
      written.push(file);
    }
  }
  if (o.json) {
    out(JSON.stringify({ ...head, status: 'replied', text: outcome.text, files: written, heldBack: outcome.heldBack }));
    return 0;
  }
  out(outcome.text);
  for (const [i, f] of outcome.files.entries()) process.stderr.write(`file: ${written[i]} (${f.data.length} bytes)\n`);
  for (const h of outcome.heldBack) process.stderr.write(`held back: ${h.name}: ${h.reason}\n`);
  process.stderr.write(`conversation: ${head.conversation}\n`);
  return 0;
}

async function sendViaServer(config: Config, profile: string, text: string, o: SendOptions): Promise<number> {
  if (!config.apiToken) throw new AgentVmError('usage', 'agent-vm send --server needs AGENTVM_API_TOKEN (the server\'s bearer token)', { status: 400 });
  const url = new URL('/v1/messages', o.server);
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${config.apiToken}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
    body: JSON.stringify({ profile, text, conversation: o.conversation, channel: o.channel, id: o.id }),
  }).catch((cause: unknown) => {
    throw new AgentVmError('server_unreachable', `cannot reach agent-vm at ${url.origin}: ${cause instanceof Error ? cause.message : String(cause)}`, { status: 503, cause });
  });
  if (!res.ok || !res.body) {
    const body = (await res.json().catch(() => ({}))) as { message?: string };
    throw new AgentVmError('send_failed', body.message ?? `the server answered ${res.status}`, { status: res.status < 500 ? 400 : 502 });
  }
  let head = { eventId: '', conversation: '' };
  let code = 1;
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += Buffer.from(chunk).toString('utf8');
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      const m = JSON.parse(line) as { type: string; text: string; eventId?: string; conversation?: string; files?: Array<{ name: string; base64: string }>; heldBack?: Array<{ name: string; reason: string }> };
      if (m.type === 'accepted') head = { eventId: m.eventId ?? '', conversation: m.conversation ?? '' };
      else if (m.type === 'reply') code = await report({ kind: 'reply', text: m.text, files: (m.files ?? []).map((f) => ({ name: f.name, data: Buffer.from(f.base64, 'base64') })), heldBack: m.heldBack ?? [] }, o, head);
      else code = await report({ kind: m.type as 'progress' | 'notice', text: m.text }, o, head);
    }
  }
  return code;
}

async function sendInProcess(config: Config, profile: string, text: string, o: SendOptions): Promise<number> {
  const parsed = localMessageSchema.safeParse({ profile, text, conversation: o.conversation, channel: o.channel, id: o.id });
  if (!parsed.success) {
    throw new AgentVmError('usage', parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '), { status: 400 });
  }
  const ctx = await openContext(config, cliLogger(config));
  try {
    const loaded = await loadProfiles(config.profilesDir);
    const served = loaded.profiles.some((p) => p.id === profile);
    let running;
    try {
      running = await startGatewayApp(ctx, { loaded, units: served ? [profile] : [] });
    } catch (err) {
      if (!isAgentVmError(err, 'unit_busy')) throw err;
      throw new AgentVmError('unit_busy', `profile "${profile}" is served by another agent-vm process; send through it: agent-vm send --server http://${config.http.host}:${config.http.port} ...`, { status: 409 });
    }
    try {
      const event = localEvent(parsed.data, 'cli');
      const result = await running.gateway.intake.accept(event);
      if (result.status === 'rejected') throw new AgentVmError(`rejected_${result.reason}`, result.message, { status: 404 });
      const head = { eventId: event.id, conversation: event.conversation };
      let code = 1;
      for await (const outcome of running.gateway.watcher.watch(event.id)) code = await report(outcome, o, head);
      return code;
    } finally {
      await running.stop();
    }
  } finally {
    await ctx.close();
  }
}

export function registerGatewayCommands(program: Command): void {
  program
    .command('up')
    .description('serve every profile: HTTP on AGENTVM_HOST:AGENTVM_PORT and one unit per profile')
    .option('--no-units', 'front door only; units run as separate `agent-vm unit <profile>` processes (needs REDIS_URL and DATABASE_URL)')
    .action(async (o: { units: boolean }) => up(loadConfig(), o));

  program
    .command('unit <profile>')
    .description("run one profile's gateway unit alone (needs REDIS_URL and DATABASE_URL)")
    .action(async (profile: string) => unit(loadConfig(), profile));

  program
    .command('send <profile> <text...>')
    .description('talk to a profile through the local channel; prints the reply and writes produced files to --out')
    .option('--conversation <id>', 'continue this conversation (default: a new one)')
    .option('--channel <name>', 'local channel name the profile must be bound to', 'cli')
    .option('--out <dir>', 'folder for the files the agent produced', 'agent-vm-out')
    .option('--server <url>', 'send through a running agent-vm (uses AGENTVM_API_TOKEN) instead of in this process')
    .option('--id <id>', 'message id; sending the same id again returns the same turn')
    .option('--json', 'print one JSON object instead of text')
    .action(async (profile: string, words: string[], o: SendOptions) => {
      const config = loadConfig();
      const text = words.join(' ');
      process.exitCode = o.server ? await sendViaServer(config, profile, text, o) : await sendInProcess(config, profile, text, o);
    });

  program
    .command('transcript <conversation>')
    .description('print a conversation: prompts, progress, replies, files and notices (local ids: local:<profile>:<id>)')
    .option('--json', 'one JSON object per line')
    .action((conversation: string, o: { json?: boolean }) =>
      withContext(async ({ store }) => {
        const rows = await store.gateway.transcript(conversation);
        if (rows.length === 0) throw new AgentVmError('not_found', `no transcript for conversation "${conversation}"${conversation.includes(':') ? '' : ` (local conversations are named ${localConversation('<profile>', conversation)})`}`, { status: 404 });
        for (const r of rows) {
          if (o.json) out(JSON.stringify({ at: r.createdAt, kind: r.kind, eventId: r.eventId, text: r.text, meta: r.meta }));
          else out(`${r.createdAt.toISOString()}  ${r.kind.padEnd(8)}  ${r.kind === 'file' ? `${r.text} (${(r.meta as { size?: number } | null)?.size ?? '?'} bytes)` : r.text}`);
        }
      }),
    );

  const audit = program.command('audit').description('the tamper-evident audit trail');
  audit
    .command('tail')
    .description('print the newest audit rows')
    .option('-n <rows>', 'how many', (v) => Number.parseInt(v, 10), 20)
    .action((o: { n: number }) =>
      withContext(async ({ store }) => {
        for (const r of await createAuditLog(store.db).tail(o.n)) {
          out([r.seq, r.at, r.profile ?? '-', r.action, r.decision, r.subject ?? '-', r.reason ?? ''].join('\t'));
        }
      }),
    );
  audit
    .command('verify')
    .description('check the hash chain; reports the first broken row')
    .action(() =>
      withContext(async ({ store }) => {
        const r = await createAuditLog(store.db).verify();
        if (r.ok) out(`audit trail intact: ${r.rows} rows`);
        else throw new AgentVmError('audit_broken', `audit trail broken at row ${r.brokenAt}: ${r.reason} (${r.rows} rows verified before it)`, { status: 409 });
      }),
    );
}
