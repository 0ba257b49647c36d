/**
 * Gateway commands: `up`, `unit <profile>`, `send`, `transcript`, `audit tail|verify`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { serve } from '@hono/node-server';
import type { Command } from 'commander';
import { localConversation, localEvent, localMessageSchema } from '../adapters/local/index.js';
import { MESSAGES_PATH, NDJSON, outcomeFromWire, parseStreamLine, type MessageHead, type MessageRequest } from '../adapters/local/wire.js';
import type { TurnOutcome } from '../adapters/types.js';
import { startGatewayApp } from '../app.js';
import { loadConfig, type Config } from '../config.js';
import { openContext } from '../context.js';
import { AgentVmError, isAgentVmError } from '../errors.js';
import { createAuditLog } from '../governance/audit.js';
import { loadProfiles } from '../governance/profiles.js';
import { createLogger } from '../log.js';
import { heldBackOf } from '../store/gateway.js';
import { printable } from '../text.js';
import { cliLogger, out, printableLines, replyReport, withContext } from './common.js';
import { operatorClient, seg } from './remote.js';

interface Entry {
  createdAt: Date;
  kind: string;
  eventId: string;
  text: string;
  meta: unknown;
}
type AuditLine = { seq: number; at: string; profile: string | null; action: string; decision: string; subject: string | null; reason: string | null };
type Verify = { ok: true; rows: number } | { ok: false; rows: number; brokenAt: number; reason: string };

/** A conversation's transcript entries, from the database or (with --server) the operator API. */
async function transcriptEntries(conversation: string, server: string | undefined): Promise<Entry[]> {
  if (!server) return withContext(({ store }) => store.gateway.transcript(conversation));
  const r = await operatorClient(loadConfig(), server)
    .get<{ items: Array<{ type: string; at: string; kind?: string; eventId?: string; text?: string; meta?: unknown }> }>(`/v1/conversations/${seg(conversation)}`)
    .catch((err: unknown) => {
      if (isAgentVmError(err) && err.status === 404) return { items: [] };
      throw err;
    });
  return r.items.filter((i) => i.type === 'entry').map((i) => ({ createdAt: new Date(i.at), kind: i.kind ?? '', eventId: i.eventId ?? '', text: i.text ?? '', meta: i.meta ?? null }));
}

async function auditTail(n: number, server: string | undefined): Promise<AuditLine[]> {
  if (!server) return withContext(({ store }) => createAuditLog(store.audit).tail(n));
  return (await operatorClient(loadConfig(), server).get<{ rows: AuditLine[] }>('/v1/audit', { limit: n })).rows.reverse();
}

async function auditVerify(server: string | undefined): Promise<Verify> {
  if (!server) return withContext(({ store }) => createAuditLog(store.audit).verify());
  return operatorClient(loadConfig(), server).get<Verify>('/v1/audit/verify');
}

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

async function up(config: Config, o: { units: boolean; keepAwake?: boolean; degraded?: boolean }): Promise<void> {
  const logger = createLogger(config.logLevel);
  const ctx = await openContext(config, logger);
  const running = await startGatewayApp(ctx, {
    units: o.units ? 'all' : 'none',
    ...(o.keepAwake ? { unit: { keepAwake: true } } : {}),
    // Every platform's credentials are checked before anything is served.
    credentials: o.degraded ? 'degraded' : 'require',
  }).catch(async (err) => {
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
  for (const u of running.channels.unhealthy()) out(`degraded: ${u.platform} is unhealthy (${printable(u.reason, 300)}); fix ${u.setting}`);
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

/**
 * Where a produced file goes under --out: its name relative to the outbox (`charts/data.csv`
 * → `<out>/charts/data.csv`), or undefined when the name could leave --out (a server at
 * --server is not trusted to send only the names the gateway validated).
 */
function outPath(outDir: string, name: string): string | undefined {
  const parts = name.split('/');
  // eslint-disable-next-line no-control-regex
  if (name.length > 1024 || parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\\') || /[\u0000-\u001f\u007f]/.test(p))) return undefined;
  return path.join(outDir, ...parts);
}

/** Prints an outcome (escaped, see `replyReport`) and writes files; returns the exit code. */
async function report(outcome: TurnOutcome, o: SendOptions, head: Pick<MessageHead, 'eventId' | 'conversation'>): Promise<number> {
  if (outcome.kind === 'progress') {
    if (!o.json) process.stderr.write(`… ${printable(outcome.text)}\n`);
    return 0;
  }
  if (outcome.kind === 'notice') {
    if (o.json) out(JSON.stringify({ ...head, status: 'failed', text: outcome.text }));
    else process.stderr.write(`agent-vm: ${printableLines(outcome.text, '  ')}\n`);
    return 1;
  }
  const written: Array<{ file: string; bytes: number }> = [];
  const heldBack = [...outcome.heldBack];
  for (const f of outcome.files) {
    const file = outPath(o.out, f.name);
    if (!file) {
      heldBack.push({ name: f.name, reason: 'not written: the name would leave --out' });
      continue;
    }
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, f.data);
    written.push({ file, bytes: f.data.length });
  }
  if (o.json) {
    out(JSON.stringify({ ...head, status: 'replied', text: outcome.text, files: written.map((w) => w.file), heldBack }));
    return 0;
  }
  const lines = replyReport({ text: outcome.text, written, heldBack, conversation: head.conversation });
  for (const l of lines.stdout) out(l);
  for (const l of lines.stderr) process.stderr.write(`${l}\n`);
  return 0;
}

async function sendViaServer(config: Config, profile: string, text: string, o: SendOptions): Promise<number> {
  if (!config.apiToken) throw new AgentVmError('usage', 'agent-vm send --server needs AGENTVM_API_TOKEN (the server\'s bearer token)', { status: 400 });
  const url = new URL(MESSAGES_PATH, o.server);
  const request: MessageRequest = { profile, text, conversation: o.conversation, channel: o.channel, id: o.id };
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${config.apiToken}`, 'content-type': 'application/json', accept: NDJSON },
    body: JSON.stringify(request),
  }).catch((cause: unknown) => {
    throw new AgentVmError('server_unreachable', `cannot reach agent-vm at ${url.origin}: ${cause instanceof Error ? cause.message : String(cause)}`, { status: 503, cause });
  });
  if (!res.ok || !res.body) {
    const body = (await res.json().catch(() => ({}))) as { message?: unknown };
    const message = typeof body.message === 'string' ? printable(body.message, 500) : `the server answered ${res.status}`;
    throw new AgentVmError('send_failed', message, { status: res.status < 500 ? 400 : 502 });
  }
  let head: Pick<MessageHead, 'eventId' | 'conversation'> = { eventId: '', conversation: '' };
  let code = 1;
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += Buffer.from(chunk).toString('utf8');
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      const m = parseStreamLine(line);
      if (m.type === 'accepted') head = { eventId: m.eventId, conversation: m.conversation };
      else code = await report(outcomeFromWire(m), o, head);
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
      running = await startGatewayApp(ctx, { loaded, units: served ? [profile] : [], schedules: false });
    } catch (err) {
      if (!isAgentVmError(err, 'unit_busy')) throw err;
      throw new AgentVmError('unit_busy', `profile "${profile}" is served by another agent-vm process; send through it: agent-vm send --server http://${config.http.host}:${config.http.port} ...`, { status: 409 });
    }
    try {
      const event = localEvent(parsed.data, 'cli');
      const result = await running.gateway.intake.accept(event);
      if (result.status === 'rejected') throw new AgentVmError(`rejected_${result.reason}`, result.message, { status: 404 });
      // A resent --id is the first sending's turn, in its conversation.
      const head = { eventId: event.id, conversation: result.status === 'duplicate' && result.conversation ? result.conversation : event.conversation };
      let code = 1;
      for await (const outcome of running.gateway.watcher.watch(event.id, undefined, { justAccepted: result.status === 'accepted' })) code = await report(outcome, o, head);
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
    .option('--keep-awake', 'leave agents awake when stopping (default: snapshot and stop what this process woke)')
    .option('--degraded', 'start even when a platform refuses its credentials: serve the others, and report that one as unhealthy in /readyz')
    .action(async (o: { units: boolean; keepAwake?: boolean; degraded?: boolean }) => up(loadConfig(), o));

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
    .option('--server <url>', 'read it from a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action(async (conversation: string, o: { json?: boolean; server?: string }) => {
      const rows = await transcriptEntries(conversation, o.server);
      if (rows.length === 0) throw new AgentVmError('not_found', `no transcript for conversation "${printable(conversation)}"${conversation.includes(':') ? '' : ` (local conversations are named ${localConversation('<profile>', printable(conversation))})`}`, { status: 404 });
      // Entries are agents' and people's text: escaped, and continuation lines indented under
      // the text column, so no entry can forge another (or a file line).
      const indent = ' '.repeat(24 + 2 + 8 + 2);
      for (const r of rows) {
        if (o.json) out(JSON.stringify({ at: r.createdAt, kind: r.kind, eventId: r.eventId, text: r.text, meta: r.meta }));
        else {
          out(`${r.createdAt.toISOString()}  ${r.kind.padEnd(8)}  ${r.kind === 'file' ? `${printable(r.text, 1100)} (${(r.meta as { size?: number } | null)?.size ?? '?'} bytes)` : printableLines(r.text, indent)}`);
          if (r.kind === 'reply') for (const h of heldBackOf(r)) out(`${indent}held back: ${printable(h.name)}: ${printable(h.reason, 300)}`);
        }
      }
    });

  const audit = program.command('audit').description('the tamper-evident audit trail');
  audit
    .command('tail')
    .description('print the newest audit rows')
    .option('-n <rows>', 'how many', (v) => Number.parseInt(v, 10), 20)
    .option('--server <url>', 'read them from a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action(async (o: { n: number; server?: string }) => {
      for (const r of await auditTail(o.n, o.server)) {
        // Subjects and reasons may hold what an agent or a platform chose: escaped for the terminal.
        out([r.seq, r.at, printable(r.profile ?? '-', 128), r.action, r.decision, printable(r.subject ?? '-', 300), printable(r.reason ?? '', 2000)].join('\t'));
      }
    });
  audit
    .command('verify')
    .description('check the hash chain; reports the first broken row')
    .option('--server <url>', 'ask a running agent-vm (operator API; AGENTVM_ADMIN_TOKEN)')
    .action(async (o: { server?: string }) => {
      const r = await auditVerify(o.server);
      if (r.ok) out(`audit trail intact: ${r.rows} rows`);
      else throw new AgentVmError('audit_broken', `audit trail broken at row ${r.brokenAt}: ${printable(r.reason, 300)} (${r.rows} rows verified before it)`, { status: 409 });
    });
}
