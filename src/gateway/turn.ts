/**
 * One turn: an inbound event in, exactly one reply or notice out.
 *
 * running → (agent works) → replied (reply + files stored in one transaction) → delivered.
 * A crash before `replied` runs the turn again; a crash after it only delivers again.
 */
import type { ChannelAdapter, HeldBackFile, InboundEvent, OutboundFile } from '../adapters/types.js';
import { describeError, isAgentVmError } from '../errors.js';
import { isDbUnavailable } from '../store/errors.js';
import type { EventRow, StoredFile, TranscriptKind } from '../store/gateway.js';
import { converse } from './converse.js';
import type { TurnDeps } from './turn-types.js';

export type { PermissionContext, TurnDeps, TurnPolicy, TurnToolGrant } from './turn-types.js';
export { DEFAULT_POLICY } from './turn-types.js';

type TurnEnd = import('./converse.js').TurnEnd;

/** Returns 'done' when the event reached a terminal status, 'retry' when it should be tried again later. */
export async function runTurn(ev: EventRow, d: TurnDeps): Promise<'done' | 'retry'> {
  const event = ev.payload as InboundEvent;
  const adapter = d.adapters.get(event.platform);
  if (ev.status === 'replied') return deliver(ev, event, adapter, d);

  // A turn runs only once the unit's claim started it (repo.claimNext: attempt counted, prompt in
  // the transcript, once). An open event the claim did not start changed under it: look again later.
  if (!d.started) {
    d.logger.warn({ eventId: ev.id, status: ev.status, attempts: ev.attempts }, 'an open event was not started by its claim; looking again later');
    return 'retry';
  }
  const startedAt = performance.now();
  // No ping here: a watcher shows nothing for "running" (only progress and the outcome), and
  // waking it now would put its queries in front of this turn's session lookup and prompt.

  let end: TurnEnd;
  // The model relay honours the agent's token from here (the agent may call its model while
  // starting) until the turn ends, however it ends.
  d.models?.beginTurn(ev.id);
  let models: { notes: string[]; usage?: unknown } = { notes: [] };
  // Whether the agent was up: a failure after that (e.g. its prompt answered with an error when
  // its model call was refused) is not a failure to start.
  let agentUp = false;
  try {
    const lease = await d.link.acquire(ev.conversation);
    agentUp = true;
    // Whether the turn was answered (a canary counts it); undefined when the gateway interrupted it.
    let ok: boolean | undefined;
    let why: string | undefined;
    try {
      end = await converse(ev, event, adapter, d, lease);
      ok = end.kind !== 'notice';
      if (!ok) why = end.text.slice(0, 300);
    } catch (err) {
      // The agent ending mid-turn is retried, but it is a failure of what runs (a canary ends).
      if (isAgentVmError(err, 'agent_restarting') || !(isAgentVmError(err) && err.retryable)) (ok = false), (why = describeError(err));
      throw err;
    } finally {
      lease.release(ok, why);
    }
  } catch (err) {
    // Ours to retry, never the agent's failure: a retryable interruption, or the database out of
    // reach mid-turn (the unit puts the event back and runs it again).
    if ((isAgentVmError(err) && err.retryable) || isDbUnavailable(err)) throw err;
    end = { kind: 'notice', text: `${agentUp ? 'The agent failed during the turn' : 'The agent could not start'}: ${describeError(err)}` };
  } finally {
    models = d.models?.endTurn(ev.id) ?? models;
  }
  // What the model relay refused or saw fail is said with the answer (or with the failure).
  const notes = [...models.notes, ...(d.notes?.() ?? [])];
  if (notes.length > 0) end = { ...end, text: `${end.text}${end.text ? '\n\n' : ''}${notes.join('\n')}` };

  if (end.kind === 'notice') {
    await failTurn(ev, end.text, d, startedAt);
    return 'done';
  }

  const transcript: Array<{ kind: TranscriptKind; text: string; meta?: unknown }> = [
    { kind: 'reply', text: end.text, meta: { stopReason: end.stopReason, heldBack: end.heldBack, ...(models.usage ? { usage: models.usage } : {}) } },
    ...end.files.map((f) => ({ kind: 'file' as const, text: f.name, meta: { size: f.size, sha256: f.sha256 } })),
  ];
  const stored = await d.repo.storeReply(ev.id, { text: end.text, files: end.files, heldBack: end.heldBack, transcript });
  if (!stored) return 'done';
  d.signals.ping(ev.id);
  // What was just stored, as deliver() would read it back (files in name order).
  const files = [...end.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return deliver(ev, event, adapter, d, { text: end.text, files, heldBack: end.heldBack }, startedAt);
}

/** Logs why a turn did not end (it is left open to run again, or failed): never a query or its parameters. */
export function logTurnFailure(log: TurnDeps['logger'], eventId: string, err: unknown): void {
  if (isAgentVmError(err, 'agent_restarting')) log.info({ eventId }, 'the agent stopped mid-turn; retrying once after a restart');
  else if (isDbUnavailable(err)) log.warn({ eventId, why: describeError(err) }, 'the database dropped out mid-turn; the turn runs again');
  else log.error({ why: describeError(err), at: err instanceof Error ? err.stack?.split('\n').slice(1, 8).join('\n') : undefined, eventId }, 'turn failed unexpectedly');
}

/**
 * Ends an event without an answer: marked failed with `text` as the reason, recorded in the
 * transcript, and told to the user in the conversation (best effort: the record comes first).
 */
export async function failTurn(ev: EventRow, text: string, d: Pick<TurnDeps, 'repo' | 'profile' | 'signals' | 'adapters' | 'logger' | 'metrics'>, startedAt?: number): Promise<void> {
  const event = ev.payload as InboundEvent;
  await d.repo.setStatus(ev.id, 'failed', text);
  d.metrics?.turnFinished(d.profile.id, event.platform, 'failed', secondsSince(startedAt));
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
  startedAt?: number,
): Promise<'done' | 'retry'> {
  if (!adapter) {
    await d.repo.setStatus(ev.id, 'failed', `no ${event.platform} adapter is configured to deliver the reply`);
    d.metrics?.turnFinished(d.profile.id, event.platform, 'undeliverable', secondsSince(startedAt));
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
      d.metrics?.turnFinished(d.profile.id, event.platform, 'undeliverable', secondsSince(startedAt));
      return 'done';
    }
    return 'retry';
  }
  await d.repo.setStatus(ev.id, 'delivered', null);
  d.metrics?.turnFinished(d.profile.id, event.platform, 'replied', secondsSince(startedAt));
  for (const f of files) {
    await d.audit.record({ profile: d.profile.id, action: 'file.out', decision: 'allow', subject: f.name, data: { eventId: ev.id, size: f.size, sha256: f.sha256, platform: event.platform } });
  }
  d.signals.ping(ev.id);
  return 'done';
}

async function storedHeldBack(eventId: string, d: TurnDeps): Promise<HeldBackFile[]> {
  return d.repo.heldBack(eventId);
}

const secondsSince = (startedAt: number | undefined) => (startedAt === undefined ? undefined : (performance.now() - startedAt) / 1000);
