/**
 * The gateway's records, split by concern (events.ts, transcripts.ts, sessions.ts, webhooks.ts,
 * intake.ts).
 * `GatewayRepo` is their union, for the turn logic that needs several; each is also on `Store`
 * by itself.
 */
import type { Db } from './index.js';
import { eventRepo, type EventRepo } from './events.js';
import { intakeRepo, type IntakeRepo } from './intake.js';
import { sessionRepo, type SessionRepo } from './sessions.js';
import { transcriptRepo, type TranscriptRepo } from './transcripts.js';
import { webhookRepo, type WebhookRepo } from './webhooks.js';
import type { RawQuery } from './raw.js';

export { sha256, type EventRow, type EventStatus, type HeldBack, type NewEvent, type StoredFile, type TranscriptKind, type EventRepo } from './events.js';
export { heldBackOf, type TranscriptRow, type TranscriptRepo } from './transcripts.js';
export type { SessionRepo } from './sessions.js';
export type { WebhookRepo } from './webhooks.js';
export type { BriefEventRow, HeldRow, HeldStatus, IntakeRepo } from './intake.js';

export type GatewayRepo = EventRepo & TranscriptRepo & SessionRepo & WebhookRepo & IntakeRepo;

/** `raw`: the hot-path client (raw.ts), for the intake's insert and taking a turn. */
export function gatewayRepo(db: Db, raw?: RawQuery): GatewayRepo {
  return { ...eventRepo(db, raw), ...transcriptRepo(db), ...sessionRepo(db), ...webhookRepo(db), ...intakeRepo(db, raw) };
}
