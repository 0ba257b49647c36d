/**
 * One turn: an inbound event in, exactly one reply or notice out.
 *
 * running → (agent works) → replied (reply + files stored in one transaction) → delivered.
 * A crash before `replied` runs the turn again; a crash after it only delivers again.
 */
import type * as acp from '@agentclientprotocol/sdk';
import type { ChannelAdapter, HeldBackFile, InboundEvent, OutboundFile, Platform } from '../adapters/types.js';
import { describeError, isAgentVmError } from '../errors.js';
import { hashOf, type AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { SandboxDriver } from '../sandbox/types.js';
import { heldBackOf, sha256, type EventRow, type GatewayRepo, type StoredFile, type TranscriptKind } from '../store/gateway.js';
import type { PermissionDecision } from './acp.js';
import type { AgentLink } from './link.js';
import type { TurnSignals } from './watch.js';

export const WORKSPACE = '/workspace';
export const OUTBOX = `${WORKSPACE}/outbox`;
export const INBOX = `${WORKSPACE}/inbox`;

export interface PermissionContext {
  profile: Profile;
  event: InboundEvent;
  request: acp.RequestPermissionRequest;
}

export interface TurnPolicy {
  /** Answers session/request_permission. The default denies everything: no policy, no permission. */
  permission(ctx: PermissionContext): Promise<PermissionDecision>;
  /** MCP servers handed to the agent in session/new and session/load. Default none. */
  mcpServers(ctx: { profile: Profile; conversation: string }): Promise<acp.McpServer[]>;
  /** Applied to reply text and text files leaving for a channel (secret redaction). Default identity. */
  redact(text: string): string;
  /** Grace after session/cancel before the connection is dropped. */
  cancelGraceMs: number;
  /** Minimum time between stored progress entries of one turn. */
  progressEveryMs: number;
}

export const DEFAULT_POLICY: TurnPolicy = {
  permission: async () => ({ allow: false, reason: 'no policy allows it' }),
  mcpServers: async () => [],
  redact: (t) => t,
  cancelGraceMs: 5_000,
  progressEveryMs: 1_000,
};

export interface TurnDeps {
  profile: Profile;
  repo: GatewayRepo;
  audit: AuditLog;
  link: AgentLink;
  adapters: ReadonlyMap<Platform, ChannelAdapter>;
  signals: TurnSignals;
  logger: Logger;
  driver: SandboxDriver;
  outbox: { maxFileBytes: number; maxTotalBytes: number; maxFiles: number };
  policy?: Partial<TurnPolicy>;
}

type TurnEnd = { kind: 'reply'; text: string; files: StoredFile[]; heldBack: HeldBackFile[]; stopReason: string } | { kind: 'notice'; text: string };

/** Returns 'done' when the event reached a terminal status, 'retry' when it should be tried again later. */
export async function runTurn(ev: EventRow, d: TurnDeps): Promise<'done' | 'retry'> {
  const event = ev.payload as InboundEvent;
  const adapter = d.adapters.get(event.platform);
  if (ev.status === 'replied') return deliver(ev, event, adapter, d);

  const started = await d.repo.startAttempt(ev.id);
  if (started.attempts === 1) {
    await d.repo.addTranscript({ conversation: ev.conversation, profile: d.profile.id, eventId: ev.id, kind: 'prompt', text: event.text, meta: { user: event.user, platform: event.platform } });
  }
  // No ping here: a watcher shows nothing for "running" (only progress and the outcome), and
  // waking it now would put its queries in front of this turn's session lookup and prompt.

  let end: TurnEnd;
  try {
    end = await converse(ev, event, adapter, d);
  } catch (err) {
    if (isAgentVmError(err) && err.retryable) throw err;
    end = { kind: 'notice', text: `The agent could not start: ${describeError(err)}` };
  }

  if (end.kind === 'notice') {
    await failTurn(ev, end.text, d);
    return 'done';
  }

  const transcript: Array<{ kind: TranscriptKind; text: string; meta?: unknown }> = [
    { kind: 'reply', text: end.text, meta: { stopReason: end.stopReason, heldBack: end.heldBack } },
    ...end.files.map((f) => ({ kind: 'file' as const, text: f.name, meta: { size: f.size, sha256: f.sha256 } })),
  ];
  const stored = await d.repo.storeReply(ev.id, { text: end.text, files: end.files, transcript });
  if (!stored) return 'done';
  d.signals.ping(ev.id);
  // What was just stored, as deliver() would read it back (files in name order).
  const files = [...end.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return deliver(ev, event, adapter, d, { text: end.text, files, heldBack: end.heldBack });
}

/**
 * Ends an event without an answer: marked failed with `text` as the reason, recorded in the
 * transcript, and told to the user in the conversation (best effort: the record comes first).
 */
export async function failTurn(ev: EventRow, text: string, d: Pick<TurnDeps, 'repo' | 'profile' | 'signals' | 'adapters' | 'logger'>): Promise<void> {
  const event = ev.payload as InboundEvent;
  await d.repo.setStatus(ev.id, 'failed', text);
  await d.repo.addTranscript({ conversation: ev.conversation, profile: d.profile.id, eventId: ev.id, kind: 'notice', text });
  d.signals.ping(ev.id);
  await d.adapters
    .get(event.platform)
    ?.send({ kind: 'notice', conversation: ev.conversation, replyTo: event.replyTo, eventId: ev.id, text })
    .catch((err) => d.logger.warn({ err, eventId: ev.id }, 'could not deliver the notice'));
}

async function deliver(
  ev: EventRow,
  event: InboundEvent,
  adapter: ChannelAdapter | undefined,
  d: TurnDeps,
  /** The reply just stored by this turn; read from the database when absent (recovery). */
  stored?: { text: string; files: StoredFile[]; heldBack: HeldBackFile[] },
): Promise<'done' | 'retry'> {
  if (!adapter) {
    await d.repo.setStatus(ev.id, 'failed', `no ${event.platform} adapter is configured to deliver the reply`);
    return 'done';
  }
  const files = stored?.files ?? (await d.repo.files(ev.id));
  const heldBack = stored?.heldBack ?? (await storedHeldBack(ev.id, d));
  try {
    await adapter.send({
      kind: 'reply',
      conversation: ev.conversation,
      replyTo: event.replyTo,
      eventId: ev.id,
      text: stored?.text ?? ev.reply ?? '',
      files: files.map((f): OutboundFile => ({ name: f.name, data: f.data })),
      heldBack,
    });
  } catch (err) {
    d.logger.warn({ err, eventId: ev.id }, 'delivering the reply failed');
    if (isAgentVmError(err) && !err.retryable) {
      await d.repo.setStatus(ev.id, 'failed', `the reply could not be delivered: ${describeError(err)}`);
      return 'done';
    }
    return 'retry';
  }
  await d.repo.setStatus(ev.id, 'delivered', null);
  for (const f of files) {
    await d.audit.record({ profile: d.profile.id, action: 'file.out', decision: 'allow', subject: f.name, data: { eventId: ev.id, size: f.size, sha256: f.sha256, platform: event.platform } });
  }
  d.signals.ping(ev.id);
  return 'done';
}

async function storedHeldBack(eventId: string, d: TurnDeps): Promise<HeldBackFile[]> {
  return heldBackOf((await d.repo.eventTranscript(eventId)).find((t) => t.kind === 'reply'));
}

function summarize(u: acp.SessionUpdate): string | undefined {
  switch (u.sessionUpdate) {
    case 'plan': {
      const done = u.entries.filter((e) => e.status === 'completed').length;
      const current = u.entries.find((e) => e.status === 'in_progress') ?? u.entries[u.entries.length - 1];
      return `plan ${done}/${u.entries.length}${current ? `: ${current.content}` : ''}`;
    }
    case 'tool_call':
      return `tool: ${u.title}`;
    case 'tool_call_update':
      return u.status ? `tool ${u.status}` : undefined;
    case 'agent_thought_chunk':
      return 'thinking';
    default:
      return undefined;
  }
}

async function converse(ev: EventRow, event: InboundEvent, adapter: ChannelAdapter | undefined, d: TurnDeps): Promise<TurnEnd> {
  const policy = { ...DEFAULT_POLICY, ...d.policy };
  const profile = d.profile;
  const conn = await d.link.connection();

  // The conversation's ACP session: continued when the agent can load it, else a new one.
  const mcpServers = await policy.mcpServers({ profile, conversation: ev.conversation });
  let sessionId = await d.repo.getSession(profile.id, ev.conversation);
  if (sessionId && !d.link.loaded.has(sessionId)) {
    if (conn.supportsLoad) {
      try {
        await conn.loadSession(sessionId, { cwd: WORKSPACE, mcpServers });
        d.link.loaded.add(sessionId);
      } catch (err) {
        d.logger.warn({ err, sessionId }, 'session/load failed; starting a new session');
        sessionId = undefined;
      }
    } else {
      sessionId = undefined;
    }
  }
  if (!sessionId) {
    sessionId = await conn.newSession({ cwd: WORKSPACE, mcpServers });
    d.link.loaded.add(sessionId);
    await d.repo.putSession(profile.id, ev.conversation, sessionId);
  }

  const promptText = await withContext(ev, event, adapter, d);
  const chunks: string[] = [];
  let lastProgressAt = 0;
  let pendingProgress: string | undefined;
  const flushProgress = async (force: boolean) => {
    if (!pendingProgress) return;
    const now = Date.now();
    if (!force && now - lastProgressAt < policy.progressEveryMs) return;
    const text = pendingProgress;
    pendingProgress = undefined;
    lastProgressAt = now;
    await d.repo.addTranscript({ conversation: ev.conversation, profile: profile.id, eventId: ev.id, kind: 'progress', text });
    d.signals.ping(ev.id);
    await adapter?.send({ kind: 'progress', conversation: ev.conversation, replyTo: event.replyTo, eventId: ev.id, text }).catch((err) => d.logger.debug({ err }, 'progress not delivered'));
  };
  const progressWrites: Array<Promise<void>> = [];

  const deadlineMs = profile.turn.timeoutSeconds * 1000;
  let timedOut = false;
  const sid = sessionId;
  const prompt = conn.prompt(sid, [{ type: 'text', text: promptText }], {
    onUpdate(u) {
      if (u.sessionUpdate === 'agent_message_chunk' && u.content.type === 'text') chunks.push(u.content.text);
      const s = summarize(u);
      if (s) {
        pendingProgress = s;
        progressWrites.push(flushProgress(false).catch((err) => d.logger.warn({ err }, 'storing progress failed')));
      }
    },
    async onPermission(request) {
      const decision = await policy.permission({ profile, event, request }).catch((err: unknown): PermissionDecision => ({ allow: false, reason: `policy failed: ${describeError(err)}` }));
      await d.audit.record({
        profile: profile.id,
        action: 'permission',
        decision: decision.allow ? 'allow' : 'deny',
        reason: decision.allow ? null : decision.reason,
        subject: request.toolCall.title ?? request.toolCall.toolCallId,
        data: { eventId: ev.id, inputHash: hashOf(request.toolCall.rawInput ?? null) },
      });
      if (!decision.allow) {
        pendingProgress = `permission denied: ${request.toolCall.title ?? 'an action'} (${decision.reason})`;
        progressWrites.push(flushProgress(true).catch(() => undefined));
      }
      return decision;
    },
  });

  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), deadlineMs);
  });
  let stopReason: string;
  try {
    const first = await Promise.race([prompt, deadline]);
    if (first === 'deadline') {
      timedOut = true;
      await conn.cancel(sid);
      const grace = new Promise<'gone'>((resolve) => setTimeout(() => resolve('gone'), policy.cancelGraceMs));
      const after = await Promise.race([prompt.catch(() => 'gone' as const), grace]);
      if (after === 'gone') d.link.detach(); // the agent ignored the cancel; do not leave the turn dangling
      stopReason = 'cancelled';
    } else {
      stopReason = first;
    }
  } catch (err) {
    clearTimeout(timer);
    await Promise.allSettled(progressWrites);
    if (isAgentVmError(err, 'agent_gone')) {
      const st = await d.link.status().catch(() => undefined);
      const how = st?.oomKilled ? 'ran out of memory' : st?.exitCode !== undefined ? `exited with code ${st.exitCode}` : 'stopped';
      await d.audit.record({ profile: profile.id, action: 'turn', decision: 'error', reason: `agent ${how}`, subject: ev.id });
      return { kind: 'notice', text: `The agent ${how} while working on this, so there is no answer. Its workspace is kept; send the message again to retry.` };
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
  await Promise.allSettled(progressWrites);
  await flushProgress(true).catch(() => undefined);

  if (timedOut) {
    await d.audit.record({ profile: profile.id, action: 'turn', decision: 'timeout', subject: ev.id, data: { timeoutSeconds: profile.turn.timeoutSeconds } });
    return { kind: 'notice', text: `The agent did not finish within ${profile.turn.timeoutSeconds} s, so the turn was cancelled.` };
  }

  const { files, heldBack } = await collectOutbox(d, policy.redact);
  let text = policy.redact(chunks.join(''));
  if (stopReason !== 'end_turn') text += `${text ? '\n\n' : ''}(the agent stopped: ${stopReason})`;
  return { kind: 'reply', text, files, heldBack, stopReason };
}

/**
 * The prompt as the agent sees it: the message, then the platform's context (e.g. a ClickUp
 * task) and where the attached files were put in the agent's inbox, as later paragraphs.
 */
async function withContext(ev: EventRow, event: InboundEvent, adapter: ChannelAdapter | undefined, d: TurnDeps): Promise<string> {
  if (!adapter?.fetchContext) return event.text;
  const ctx = await adapter.fetchContext(event, { maxFileBytes: d.outbox.maxFileBytes, maxFiles: d.outbox.maxFiles });
  const notes: string[] = [];
  if (ctx.files.length > 0) {
    const dir = `inbox/${ev.id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}`;
    const paths = await d.driver.writeFiles(d.profile.id, dir, ctx.files);
    notes.push(`Attached files, saved in ${WORKSPACE}/${dir}/:\n${paths.map((p) => `- ${p}`).join('\n')}`);
  }
  if (ctx.skipped.length > 0) notes.push(`Attachments not received:\n${ctx.skipped.map((s) => `- ${s.name}: ${s.reason}`).join('\n')}`);
  // The request first, then what the platform adds around it.
  return [event.text, ctx.preamble, ...notes].filter((x): x is string => Boolean(x)).join('\n\n');
}

const TEXT_LIKE = /\.(txt|md|csv|json|ya?ml|log|html?|xml|ts|js|py|sh)$/i;

async function collectOutbox(d: TurnDeps, redact: (t: string) => string): Promise<{ files: StoredFile[]; heldBack: HeldBackFile[] }> {
  const files: StoredFile[] = [];
  const heldBack: HeldBackFile[] = [];
  const agentId = d.profile.id;
  for await (const e of d.driver.readOutbox(agentId, d.outbox)) {
    if (e.kind === 'refused') {
      heldBack.push({ name: e.name, reason: e.detail });
      continue;
    }
    let data = e.data;
    if (TEXT_LIKE.test(e.name)) {
      const redacted = redact(data.toString('utf8'));
      if (redacted !== data.toString('utf8')) data = Buffer.from(redacted);
    }
    files.push({ name: e.name, size: data.length, sha256: sha256(data), data });
  }
  const sent = [...files.map((f) => f.name), ...heldBack.map((h) => h.name)];
  if (sent.length > 0) {
    // Taken files leave the outbox, so the next turn does not send them again.
    const r = await d.driver.exec(agentId, ['rm', '-rf', '--', ...sent.map((n) => `${OUTBOX}/${n}`)], { timeoutMs: 10_000 });
    if (r.exitCode !== 0) d.logger.warn({ stderr: r.stderr.slice(0, 500) }, 'clearing the outbox failed');
  }
  return { files, heldBack };
}

