/**
 * The agent's part of a turn: the conversation's ACP session (continued or new), its working
 * directory, the prompt with its context, updates turned into progress, permission requests
 * answered by policy, the deadline, and the files the turn left in its conversation's outbox.
 *
 * Scope per conversation: the session's `cwd` is the conversation's own directory
 * (sandbox/layout.ts); its inbox and outbox are there; only that outbox is collected.
 */
import type * as acp from '@agentclientprotocol/sdk';
import type { ChannelAdapter, HeldBackFile, InboundEvent } from '../adapters/types.js';
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';
import { hashOf } from '../governance/audit.js';
import { conversationPaths, WORKSPACE, type ConversationPaths } from '../sandbox/layout.js';
import { sha256, type EventRow, type StoredFile } from '../store/gateway.js';
import { printable } from '../text.js';
import type { PermissionDecision } from './acp.js';
import type { AgentLease } from './link.js';
import { createBoundedReply } from './reply.js';
import { DEFAULT_POLICY, type TurnDeps } from './turn-types.js';

export type TurnEnd =
  | { kind: 'reply'; text: string; files: StoredFile[]; heldBack: HeldBackFile[]; stopReason: string }
  | { kind: 'notice'; text: string };

/** One line of progress from an ACP update, or nothing worth showing. Agent text is escaped. */
function summarize(u: acp.SessionUpdate): string | undefined {
  switch (u.sessionUpdate) {
    case 'plan': {
      const done = u.entries.filter((e) => e.status === 'completed').length;
      const current = u.entries.find((e) => e.status === 'in_progress') ?? u.entries[u.entries.length - 1];
      return `plan ${done}/${u.entries.length}${current ? `: ${printable(current.content, 200)}` : ''}`;
    }
    case 'tool_call':
      return `tool: ${printable(u.title, 200)}`;
    case 'tool_call_update':
      return u.status ? `tool ${printable(u.status, 40)}` : undefined;
    case 'agent_thought_chunk':
      return 'thinking';
    default:
      return undefined;
  }
}

export async function converse(ev: EventRow, event: InboundEvent, adapter: ChannelAdapter | undefined, d: TurnDeps, lease: AgentLease): Promise<TurnEnd> {
  const policy = { ...DEFAULT_POLICY, ...d.policy };
  const profile = d.profile;
  const conn = lease.conn;
  const paths = conversationPaths(ev.conversation);
  await prepareDirs(d, lease, paths);

  const deadlineMs = profile.turn.timeoutSeconds * 1000;
  const tools = policy.tools({ profile, conversation: ev.conversation, eventId: ev.id, ttlMs: deadlineMs + policy.cancelGraceMs + 60_000, connection: conn });
  try {
    // The conversation's ACP session: continued when the agent can load it, else a new one.
    const mcpServers = [...tools.servers];
    let sessionId = d.session !== undefined ? (d.session ?? undefined) : await d.repo.getSession(profile.id, ev.conversation);
    const hadSession = sessionId !== undefined;
    let isNew = false;
    if (sessionId && !lease.loaded.has(sessionId)) {
      if (conn.supportsLoad) {
        try {
          await conn.loadSession(sessionId, { cwd: paths.cwd, mcpServers });
          lease.loaded.add(sessionId);
        } catch (err) {
          if (isAgentVmError(err) && (err.code === 'agent_gone' || err.code === 'agent_detached')) throw err;
          d.logger.warn({ err: describeError(err), sessionId }, 'session/load failed; starting a new session');
          sessionId = undefined;
        }
      } else {
        sessionId = undefined;
      }
    }
    if (!sessionId) {
      sessionId = await conn.newSession({ cwd: paths.cwd, mcpServers });
      lease.loaded.add(sessionId);
      isNew = true;
      await d.repo.putSession(profile.id, ev.conversation, sessionId);
    }

    // A session the agent could not continue: the new one gets the conversation so far from us.
    const history = isNew && hadSession ? await recentHistory(d, ev) : undefined;
    const promptText = await withContext(ev, event, adapter, d, paths, isNew, mcpServers.length > 0, history);
    return await prompt(ev, event, adapter, d, lease, sessionId, promptText, deadlineMs);
  } catch (err) {
    // The agent died while this turn opened its session (another conversation's turn may have
    // been what killed it): healed as a crash mid-prompt is, not failed outright.
    if (isAgentVmError(err, 'agent_gone')) return agentGone(ev, d);
    throw err;
  } finally {
    tools.release();
  }
}

/**
 * The agent process ended under this turn. On the first attempt the turn runs once more on a
 * restarted agent (its workspace kept), said in one line through `say`; after that, one notice.
 */
async function agentGone(ev: EventRow, d: TurnDeps, say?: (text: string) => Promise<void>): Promise<TurnEnd> {
  const st = await d.link.status().catch(() => undefined);
  const how = st?.oomKilled ? 'ran out of memory' : st?.exitCode !== undefined ? `exited with code ${st.exitCode}` : 'stopped';
  if (ev.attempts === 0) {
    await d.audit.record({ profile: d.profile.id, action: 'heal', decision: 'retry', reason: `agent ${how}`, subject: ev.id });
    await say?.(`The agent ${how}; restarting it and retrying your request.`);
    throw new AgentVmError('agent_restarting', `the agent ${how} during the turn; it is restarted and the turn runs again`, { retryable: true });
  }
  await d.audit.record({ profile: d.profile.id, action: 'turn', decision: 'error', reason: `agent ${how}`, subject: ev.id });
  return { kind: 'notice', text: `The agent ${how} while working on this, so there is no answer. Its workspace is kept; send the message again to retry.` };
}

async function prompt(
  ev: EventRow,
  event: InboundEvent,
  adapter: ChannelAdapter | undefined,
  d: TurnDeps,
  lease: AgentLease,
  sid: string,
  promptText: string,
  deadlineMs: number,
): Promise<TurnEnd> {
  const policy = { ...DEFAULT_POLICY, ...d.policy };
  const profile = d.profile;
  const reply = createBoundedReply({ maxBytes: d.reply.maxBytes, maxFileBytes: d.outbox.maxFileBytes });
  // Anything the agent writes to its outbox during the turn is after this.
  const turnStart = new Date();
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
  const partial = streamPartial(ev, event, adapter, d, reply, policy.redact, Math.max(0, policy.holdback() - 1));

  const running = lease.conn.prompt(sid, [{ type: 'text', text: promptText }], {
    onUpdate(u) {
      if (u.sessionUpdate === 'agent_message_chunk' && u.content.type === 'text') {
        reply.push(u.content.text);
        partial.changed();
      }
      const s = summarize(u);
      if (s) {
        pendingProgress = s;
        progressWrites.push(flushProgress(false).catch((err) => d.logger.warn({ err }, 'storing progress failed')));
      }
    },
    async onPermission(request) {
      const decision = await policy.permission({ profile, event, conversation: ev.conversation, request }).catch((err: unknown): PermissionDecision => ({ allow: false, reason: `policy failed: ${describeError(err)}` }));
      await d.audit.record({
        profile: profile.id,
        action: 'permission',
        decision: decision.allow ? 'allow' : 'deny',
        reason: decision.allow ? null : decision.reason,
        subject: request.toolCall.title ?? request.toolCall.toolCallId,
        data: { eventId: ev.id, kind: request.toolCall.kind ?? null, inputHash: hashOf(request.toolCall.rawInput ?? null) },
      });
      if (!decision.allow) {
        pendingProgress = `permission denied: ${printable(request.toolCall.title ?? 'an action', 200)} (${decision.reason})`;
        progressWrites.push(flushProgress(true).catch(() => undefined));
      }
      return decision;
    },
  });
  // The prompt may settle long after we stop waiting (an abandoned session): never unhandled.
  running.catch(() => undefined);

  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), deadlineMs);
  });
  let stopReason: string;
  let timedOut = false;
  try {
    const first = await Promise.race([running, deadline]);
    if (first === 'deadline') {
      timedOut = true;
      await lease.conn.cancel(sid);
      let graceTimer: NodeJS.Timeout | undefined;
      const grace = new Promise<'grace'>((resolve) => {
        graceTimer = setTimeout(() => resolve('grace'), policy.cancelGraceMs);
      });
      const after = await Promise.race([running.then(() => 'done' as const, () => 'done' as const), grace]);
      clearTimeout(graceTimer);
      // The agent ignored the cancel: give up on this session only; the others go on.
      if (after === 'grace') lease.abandon(sid);
      stopReason = 'cancelled';
    } else {
      stopReason = first;
    }
  } catch (err) {
    await Promise.allSettled(progressWrites);
    if (isAgentVmError(err, 'agent_gone')) {
      return agentGone(ev, d, async (text) => {
        pendingProgress = text;
        await flushProgress(true).catch(() => undefined);
      });
    }
    throw err;
  } finally {
    clearTimeout(timer);
    await partial.stop();
  }
  await Promise.allSettled(progressWrites);
  await flushProgress(true).catch(() => undefined);

  if (timedOut) {
    await d.audit.record({ profile: profile.id, action: 'turn', decision: 'timeout', subject: ev.id, data: { timeoutSeconds: profile.turn.timeoutSeconds } });
    return { kind: 'notice', text: `The agent did not finish within ${profile.turn.timeoutSeconds} s, so the turn was cancelled.` };
  }

  const paths = conversationPaths(ev.conversation);
  const { files, heldBack } = await collectOutbox(d, paths, policy.redact, turnStart);
  const full = reply.finish();
  let text = policy.redact(full.text);
  if (full.file) {
    const data = Buffer.from(policy.redact(full.file.data.toString('utf8')));
    files.push({ ...full.file, size: data.length, sha256: sha256(data), data });
    text += `${text ? '\n\n' : ''}${full.note}`;
  }
  if (stopReason !== 'end_turn') text += `${text ? '\n\n' : ''}(the agent stopped: ${stopReason})`;
  return { kind: 'reply', text, files, heldBack, stopReason };
}

/** The conversation's directory, outbox and inbox exist before the agent is pointed at them. */
async function prepareDirs(d: TurnDeps, lease: AgentLease, paths: ConversationPaths): Promise<void> {
  if (lease.prepared.has(paths.dir)) return;
  // One engine upload for both (tens of ms under runsc, on the first turn of every wake).
  await d.driver.makeDirs(d.profile.id, [paths.outbox, paths.inbox]);
  lease.prepared.add(paths.dir);
}

/**
 * The prompt as the agent sees it: the message first (the reference agent reads its command from
 * the first paragraph), then the platform's context (e.g. a ClickUp task), where the attached
 * files were put, and, at the start of a session, who is asking and where its files go.
 */
async function withContext(
  ev: EventRow,
  event: InboundEvent,
  adapter: ChannelAdapter | undefined,
  d: TurnDeps,
  paths: ConversationPaths,
  isNew: boolean,
  hasTools: boolean,
  history?: string,
): Promise<string> {
  const notes: string[] = [];
  const ctx = adapter?.fetchContext ? await adapter.fetchContext(event, { maxFileBytes: d.outbox.maxFileBytes, maxFiles: d.outbox.maxFiles }) : undefined;
  if (ctx?.preamble) notes.push(ctx.preamble);
  if (ctx && ctx.files.length > 0) {
    const dir = `${paths.inbox}/${ev.id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}`;
    const written = await d.driver.writeFiles(d.profile.id, dir, ctx.files);
    notes.push(`Attached files, saved in ${WORKSPACE}/${dir}/:\n${written.map((p) => `- ${p}`).join('\n')}`);
  }
  if (ctx && ctx.skipped.length > 0) notes.push(`Attachments not received:\n${ctx.skipped.map((s) => `- ${printable(s.name, 200)}: ${s.reason}`).join('\n')}`);
  if (isNew) {
    const who = printable(event.user.name ? `${event.user.name} (${event.user.id})` : event.user.id, 200);
    notes.push(
      [
        'Context from agent-vm (the platform you are working in):',
        `- You are answering ${who} on ${event.platform}; this conversation is ${printable(ev.conversation, 200)}.`,
        `- Your working directory for this conversation is ${paths.cwd}.`,
        `- Files for the person: write them to ${paths.outboxPath}/ and they are sent with your answer.`,
        `- Files from the person arrive in ${paths.inboxPath}/.`,
        hasTools ? '- Your tools are on the MCP server named agent-vm.' : '- You have no external tools.',
      ].join('\n'),
    );
  } else {
    notes.push(`(Files for the person go in ${paths.outboxPath}/.)`);
  }
  if (history) notes.push(history);
  return [event.text, ...notes].join('\n\n');
}

const TEXT_LIKE = /\.(txt|md|csv|json|ya?ml|log|html?|xml|ts|js|py|sh)$/i;

/** Only this conversation's outbox: what the turn left there leaves with its reply, nowhere else. */
async function collectOutbox(d: TurnDeps, paths: ConversationPaths, redact: (t: string) => string, turnStart: Date): Promise<{ files: StoredFile[]; heldBack: HeldBackFile[] }> {
  const files: StoredFile[] = [];
  const heldBack: HeldBackFile[] = [];
  const agentId = d.profile.id;
  for await (const e of d.driver.readOutbox(agentId, paths.outbox, d.outbox, { unchangedSince: turnStart })) {
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
  // Taken files leave the outbox, so the next turn does not send them again. A refused name that
  // is not a valid relative path (the agent's own making) stays: removing it could mean anything.
  const taken = [...files.map((f) => f.name), ...heldBack.map((h) => h.name)].filter((n) => !n.startsWith('/') && !n.split('/').includes('..') && !/[\u0000-\u001f\u007f]/.test(n));
  if (taken.length > 0) {
    await d.driver.removeFiles(agentId, paths.outbox, taken).catch((err: unknown) => d.logger.warn({ err: describeError(err) }, 'clearing the outbox failed'));
  }
  return { files, heldBack };
}

const PARTIAL_EVERY_MS = 250;

/**
 * Sends the answer so far to the adapter as it grows: the first at once, then at most every
 * PARTIAL_EVERY_MS, redacted, with the tail that could be the start of a secret held back. Delivery failures are ignored (the reply
 * that follows is what counts).
 */
function streamPartial(
  ev: EventRow,
  event: InboundEvent,
  adapter: ChannelAdapter | undefined,
  d: TurnDeps,
  reply: { preview(): string },
  redact: (t: string) => string,
  holdback: number,
) {
  let timer: NodeJS.Timeout | undefined;
  let last = 0;
  let sent = '';
  let sending: Promise<void> = Promise.resolve();
  let stopped = false;
  const send = () => {
    timer = undefined;
    if (stopped || !adapter) return;
    const full = redact(reply.preview());
    const text = full.length > holdback ? full.slice(0, full.length - holdback) : '';
    if (!text || text === sent) return;
    sent = text;
    last = Date.now();
    sending = sending
      .then(() => adapter.send({ kind: 'partial', conversation: ev.conversation, replyTo: event.replyTo, eventId: ev.id, text }))
      .catch((err: unknown) => d.logger.debug({ err: describeError(err) }, 'partial answer not delivered'));
  };
  return {
    changed() {
      if (stopped || timer || !adapter) return;
      timer = setTimeout(send, Math.max(0, last + PARTIAL_EVERY_MS - Date.now()));
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await sending;
    },
  };
}

const HISTORY_TURNS = 20;
const HISTORY_CHARS = 12_000;

/**
 * The conversation's recent prompts and replies from our transcript (newest kept when cut), for
 * an agent that lost its session (its `session/load` failed or it cannot load sessions).
 */
async function recentHistory(d: TurnDeps, ev: EventRow): Promise<string | undefined> {
  const rows = (await d.repo.transcript(ev.conversation)).filter((t) => t.eventId !== ev.id && (t.kind === 'prompt' || t.kind === 'reply'));
  if (rows.length === 0) return undefined;
  const lines: string[] = [];
  let size = 0;
  for (const t of rows.slice(-HISTORY_TURNS * 2).reverse()) {
    const who = t.kind === 'prompt' ? 'Person' : 'You';
    const line = `${who}: ${t.text.length > 2000 ? `${t.text.slice(0, 2000)}…` : t.text}`;
    if (size + line.length > HISTORY_CHARS) break;
    lines.unshift(line);
    size += line.length;
  }
  return `Earlier in this conversation (your previous session could not be restored):\n${lines.join('\n')}`;
}
