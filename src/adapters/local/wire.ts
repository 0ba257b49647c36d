/**
 * `POST /v1/messages` on the wire, in one place: the request the server takes, the answer it
 * gives (one JSON object, or NDJSON lines with `Accept: application/x-ndjson`), and how a client
 * (`agent-vm send --server`) reads that answer back. Both sides import these, so they cannot
 * drift apart.
 *
 * The client validates what it reads: a server (or whatever answers at that URL) is not trusted
 * to send well-formed lines, and a malformed one is an error naming the line, not a crash.
 *
 * Deliberately left out: the approvals API (`/v1/approvals`), which is the operator API's.
 */
import { z } from 'zod';
import { AgentVmError } from '../../errors.js';
import type { TurnOutcome } from '../types.js';

export const MESSAGES_PATH = '/v1/messages';
export const NDJSON = 'application/x-ndjson';

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SAFE_ID_MESSAGE = 'must be 1-128 letters, digits, ".", "_" or "-"';

/** The request body. */
export const messageRequestSchema = z.strictObject({
  profile: z.string().min(1).max(64),
  text: z.string().trim().min(1, 'must not be empty').max(100_000),
  /** Continue this conversation (default: a new one). */
  conversation: z.string().regex(SAFE_ID, SAFE_ID_MESSAGE).optional(),
  channel: z.string().regex(SAFE_ID, SAFE_ID_MESSAGE).optional(),
  /** Your own id for this message: sending it again returns the same turn instead of running a new one. */
  id: z.string().regex(SAFE_ID, SAFE_ID_MESSAGE).optional(),
  user: z.string().max(128).optional(),
});
export type MessageRequest = z.input<typeof messageRequestSchema>;

/** What every answer starts with. For a resent `id`, these are the first sending's. */
export interface MessageHead {
  eventId: string;
  /** The conversation key (`local:<profile>:<id>`), as `agent-vm transcript` takes it. */
  conversation: string;
  profile: string | null;
  /** True when `id` was sent before: the answer is that turn's, nothing ran again. */
  duplicate: boolean;
}

const fileSchema = z.object({ name: z.string(), size: z.number().int().nonnegative(), base64: z.string() });
const heldBackSchema = z.object({ name: z.string(), reason: z.string() });

const outcomeSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('progress'), text: z.string() }),
  z.object({ type: z.literal('notice'), text: z.string() }),
  z.object({ type: z.literal('reply'), text: z.string(), files: z.array(fileSchema), heldBack: z.array(heldBackSchema) }),
]);
export type WireOutcome = z.infer<typeof outcomeSchema>;

const acceptedSchema = z.object({
  type: z.literal('accepted'),
  eventId: z.string(),
  conversation: z.string(),
  profile: z.string().nullable(),
  duplicate: z.boolean(),
});

/** One NDJSON line: `accepted` (the head) first, then progress, then one reply or notice. */
export type StreamLine = z.infer<typeof acceptedSchema> | WireOutcome;

/** The single JSON answer (without `Accept: application/x-ndjson`). */
export type MessageAnswer = MessageHead & { status: 'replied' | 'failed'; progress: string[] } & Exclude<WireOutcome, { type: 'progress' }>;

/** An outcome as JSON: files as base64. */
export function outcomeToWire(o: TurnOutcome): WireOutcome {
  if (o.kind !== 'reply') return { type: o.kind, text: o.text };
  return {
    type: 'reply',
    text: o.text,
    files: o.files.map((f) => ({ name: f.name, size: f.data.length, base64: f.data.toString('base64') })),
    heldBack: o.heldBack.map((h) => ({ name: h.name, reason: h.reason })),
  };
}

/** The single JSON answer for a turn that ended with `final` (a reply or a notice). */
export function messageAnswer(head: MessageHead, progress: string[], final: TurnOutcome): MessageAnswer {
  const wire = outcomeToWire(final);
  // A progress outcome never ends a turn; shown as a failure rather than trusted.
  if (wire.type === 'progress') return { ...head, status: 'failed', progress, type: 'notice', text: wire.text };
  return { ...head, status: wire.type === 'reply' ? 'replied' : 'failed', progress, ...wire };
}

export function outcomeFromWire(w: WireOutcome): TurnOutcome {
  if (w.type !== 'reply') return { kind: w.type, text: w.text };
  return { kind: 'reply', text: w.text, files: w.files.map((f) => ({ name: f.name, data: Buffer.from(f.base64, 'base64') })), heldBack: w.heldBack };
}

const lineSchema = z.union([acceptedSchema, outcomeSchema]);

/** Parses one NDJSON line of an answer; throws a clear error for anything else. */
export function parseStreamLine(line: string): StreamLine {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw new AgentVmError('bad_answer', `the server sent a line that is not JSON (${line.length} characters)`, { status: 502 });
  }
  const r = lineSchema.safeParse(json);
  if (!r.success) throw new AgentVmError('bad_answer', `the server sent a line that is not a /v1/messages answer: ${r.error.issues[0]?.message ?? 'invalid'}`, { status: 502 });
  return r.data;
}
