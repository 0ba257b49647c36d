/**
 * The adapter seam. A channel adapter turns a platform's inbound request into an `InboundEvent`
 * (verify → parse), hands it to the gateway's `Intake`, and later sends `OutboundMessage`s back
 * to the same thread. Adapters never import the gateway, the sandbox or another adapter; the
 * gateway never parses platform ids (conversation and replyTo are opaque strings the adapter
 * encodes and decodes).
 *
 * Deliberately left out: anything about profiles or agents. An adapter does not know which
 * agent will answer; the router decides from `address`.
 */
import type { Hono } from 'hono';

export type Platform = 'local' | 'slack' | 'discord' | 'clickup';

/** Where an event came from, in the terms profile bindings use. */
export type Address =
  /** The local channel names the profile it talks to, like a direct message to one agent. */
  | { platform: 'local'; profile: string; channel: string }
  | { platform: 'slack'; team: string; channel: string }
  | { platform: 'discord'; guild: string; channel: string; command?: string }
  /** ClickUp routes by scope plus a trigger mention found in `InboundEvent.text`. */
  | { platform: 'clickup'; team: string; space?: string; folder?: string; list?: string };

/** A file attached to the inbound message; fetched by the adapter's `fetchContext`, never by the gateway. */
export interface InboundAttachment {
  /** Adapter-owned reference (a URL or an id). Opaque to the gateway. */
  ref: string;
  name: string;
  size?: number;
  mimeType?: string;
}

export interface InboundEvent {
  /**
   * Platform-unique and stable across redeliveries: `slack:<event_id>`, `discord:<interaction id>`,
   * `clickup:<history item id>`, `local:<uuid>`. An id seen before never runs a second turn.
   */
  id: string;
  platform: Platform;
  address: Address;
  /** The thread: turns of one conversation run one at a time, in order, in one ACP session. */
  conversation: string;
  /** Where replies go, when that differs from the conversation (e.g. an interaction token). */
  replyTo?: string;
  user: { id: string; name?: string };
  /** The message with the bot mention removed. Never logged at info level. */
  text: string;
  attachments?: InboundAttachment[];
  /** ISO 8601. */
  receivedAt: string;
}

/** What the gateway did with an event; the adapter acknowledges the platform accordingly. */
export type IntakeResult =
  | { status: 'accepted'; profile: string }
  /**
   * Seen before (a platform retry): acknowledge and do nothing. `conversation` is the stored
   * event's (the first delivery's), which a resend may not repeat faithfully (the local API
   * makes a new one per request); the gateway's intake always sets it.
   */
  | { status: 'duplicate'; profile: string | null; conversation?: string }
  /** No profile serves this address. `message` is what the user should be told; nothing was woken. */
  | { status: 'rejected'; reason: 'unbound' | 'ambiguous' | 'profile_invalid'; message: string };

/** The gateway's front door: stores the event (before the adapter acks) and queues its turn. */
export interface Intake {
  accept(event: InboundEvent): Promise<IntakeResult>;
}

/** An inbound event whose address is not known yet (it needs a platform API call after the ack). */
export type HeldEvent = Omit<InboundEvent, 'address'>;

/**
 * An intake that can store a delivery before it can be routed, so a webhook is acknowledged
 * before any call back to the platform (ClickUp: the comment names its task, GET /task names the
 * task's list). The guarantees of `accept` hold across the two steps:
 *
 *   - stored before acknowledged: `hold` resolves once the delivery is durable;
 *   - a redelivery never runs a second turn: `hold` of an id seen before (held, routed, dropped,
 *     or taken in by `accept`) answers `duplicate`, without the caller calling the platform, and
 *     `route` of an id routed before answers `duplicate`.
 *
 * Deliberately left out: resolving the address; the adapter does that (with its own caches and
 * rate-limit waits) between `hold` and `route`, and calls `held` after a restart to finish what
 * was held but never routed.
 */
export interface HoldingIntake extends Intake {
  hold(event: HeldEvent): Promise<{ status: 'held' } | { status: 'duplicate' }>;
  /** Routes a held delivery to its address: then exactly as `accept` (stored, queued, or rejected). */
  route(id: string, address: Address): Promise<IntakeResult>;
  /** Gives up on a held delivery (the task is gone, a comment of agent-vm's own); `reason` is for operators. */
  drop(id: string, reason: string): Promise<void>;
  /** Deliveries of a platform held but neither routed nor dropped (a restart in between), oldest first. */
  held(platform: Platform): Promise<HeldEvent[]>;
}

export function canHold(intake: Intake): intake is HoldingIntake {
  const i = intake as Partial<HoldingIntake>;
  return typeof i.hold === 'function' && typeof i.route === 'function' && typeof i.drop === 'function' && typeof i.held === 'function';
}

export interface OutboundFile {
  name: string;
  data: Buffer;
}

/** A file the agent produced that was not sent, and why (too large, too many, unsafe name...). */
export interface HeldBackFile {
  name: string;
  reason: string;
}

export type OutboundMessage =
  /** The agent is working. Adapters may throttle, coalesce or drop these. */
  | { kind: 'progress'; conversation: string; replyTo?: string; eventId: string; text: string }
  /**
   * The answer so far, while the agent is still writing it: the whole text each time, growing
   * (already redacted; the last characters may be held back until the next one). Adapters that
   * stream (Slack, Discord) show it in place; others ignore it. Sent at most every few hundred
   * ms, the first one at once. The `reply` that follows carries the final text, which begins
   * with everything streamed.
   */
  | { kind: 'partial'; conversation: string; replyTo?: string; eventId: string; text: string }
  /** The answer of one turn. Sent once per turn. */
  | {
      kind: 'reply';
      conversation: string;
      replyTo?: string;
      eventId: string;
      text: string;
      files: OutboundFile[];
      heldBack: HeldBackFile[];
    }
  /** Something the user must know: the turn failed, timed out, or was refused. */
  | { kind: 'notice'; conversation: string; replyTo?: string; eventId: string; text: string };

/** What the agent should see besides the message: fetched by the adapter right before the turn. */
export interface TurnContext {
  /** Prepended to the prompt, e.g. a ClickUp task's name and description. */
  preamble?: string;
  /**
   * Written to the conversation's inbox before the turn, under the names the platform gave: the
   * sandbox layer (src/sandbox/inbox.ts) makes them safe and unique, and the agent is told the
   * paths actually written. Adapters do not clean names themselves.
   */
  files: OutboundFile[];
  /** Attachments not fetched (too large, download failed), told to the agent and the user. */
  skipped: HeldBackFile[];
}

export interface ChannelAdapter {
  readonly platform: Platform;
  /** Inbound HTTP routes (e.g. `POST /slack/events`), mounted on the gateway's app. */
  readonly routes?: Hono;
  /** Starts long-lived inbound connections (Socket Mode, the Discord gateway). Optional. */
  start?(): Promise<void>;
  /** Delivers one message. Throws a retryable AgentVmError on transient platform failures. */
  send(message: OutboundMessage): Promise<void>;
  /** Downloads attachments and context for a turn. Optional: no context by default. */
  fetchContext?(event: InboundEvent, limits: { maxFileBytes: number; maxFiles: number }): Promise<TurnContext>;
  /**
   * Shows a tool call waiting for approval with a way to answer it (Slack buttons). Absent: the
   * gateway posts the request as progress text naming the operator API.
   */
  askApproval?(prompt: ApprovalPrompt): Promise<void>;
  /** The request was answered or expired: update what `askApproval` posted. */
  approvalSettled?(prompt: ApprovalPrompt, outcome: ApprovalOutcome): Promise<void>;
  /**
   * Asks the platform whether the configured credentials work (Slack `auth.test`, Discord
   * `GET /users/@me`, ClickUp `GET /user`). Never throws: a failure is a report naming the
   * setting to fix. `agent-vm up` refuses to start on a failed check (or, with `--degraded`,
   * marks the platform unhealthy). Absent: nothing to check (the local channel).
   */
  checkCredentials?(): Promise<CredentialCheck>;
  /** Idempotent. */
  close?(): Promise<void>;
}

export type CredentialCheck =
  | { ok: true; platform: Platform; identity: string }
  /** `setting` is the environment variable to fix; `transient` when the platform could not be reached (the credential may be fine). */
  | { ok: false; platform: Platform; setting: string; reason: string; transient: boolean };

/**
 * One failure between "the agent answered" and "the person sees it", as an adapter reports it
 * (`onDeliveryFailure` in every platform adapter's options). `shown` says whether a note about
 * it reached the thread; when it did not, the adapter has also logged it at error level, so an
 * operator sees it either way. A retried step that fails again is reported again.
 */
export interface DeliveryFailure {
  platform: Platform;
  /** What was being delivered. */
  kind: 'reply' | 'notice' | 'progress' | 'partial' | 'reaction' | 'note' | 'opener';
  /** The step that failed: `text`, `file`, `stream`, `edit`, `reaction`, `status`, … */
  step: string;
  /** The platform's error (`missing_scope`, `50013`, `HTTP 429`) or ours (`too_large`). */
  code: string;
  /** The step will be tried again (by the adapter's client or the gateway's retry of `send`). */
  retryable: boolean;
  /** A note about the failure is in the thread. */
  shown: boolean;
}

/** Where platform threads' read positions are kept (the store's `threads` repository). */
export interface ThreadCursors {
  getCursor(conversation: string): Promise<string | undefined>;
  putCursor(conversation: string, cursor: string): Promise<void>;
}

/** How much of a thread's history a first turn gets, and a later turn at most. */
export interface ThreadContextLimits {
  maxMessages: number;
  maxChars: number;
}

/** Where people's ratings of answers go (the store's `feedback` repository). */
export interface FeedbackSink {
  record(f: { eventId: string; platform: string; userId: string; value: 'positive' | 'negative' }): Promise<void>;
}

/** What happened to an accepted event, as the local channel streams it to its caller. */
export type TurnOutcome =
  | { kind: 'progress'; text: string }
  | { kind: 'reply'; text: string; files: OutboundFile[]; heldBack: HeldBackFile[] }
  /** The turn ended without an answer (failed, timed out, crashed); `text` says why. */
  | { kind: 'notice'; text: string };

/** Follows one event until its turn ends. Provided by the gateway to adapters that answer synchronously. */
export interface TurnWatcher {
  /**
   * Yields progress, then exactly one `reply` or `notice`, then ends. Stops early on `signal`.
   * `justAccepted`: the caller has just stored the event (the intake answered `accepted`), so it
   * has nothing to show yet; the first look waits for the turn's first signal (or the poll)
   * instead of reading the database while the turn starts.
   */
  watch(eventId: string, signal?: AbortSignal, opts?: { justAccepted?: boolean }): AsyncIterable<TurnOutcome>;
}

/** A tool call waiting for a person, as the gateway asks the conversation's channel to show it. */
export interface ApprovalPrompt {
  /** The approval id; a channel's answer carries it back to `ApprovalDesk.answer`. */
  id: string;
  conversation: string;
  replyTo?: string;
  eventId: string;
  /** `<server>.<tool>` */
  tool: string;
  /** The call's arguments as short readable text, already redacted of secret values. */
  summary: string;
  /** Platform user ids (of this adapter's platform) who may answer; empty: only the operator API. */
  approvers: string[];
  expiresAt: Date;
}

export type ApprovalOutcome = { decision: 'approved' | 'denied' | 'timeout'; by: string | null };

/** Tool calls waiting for a person, as a channel shows and answers them. */
export interface ApprovalDesk {
  pending(): Promise<Array<{ id: string; profile: string; sessionKey: string; tool: string; approvers: string[]; expiresAt: Date }>>;
  /**
   * Answers a pending request as `by` (a person on a platform, checked against the request's
   * approvers) or, without `by`, as the operator holding the API token.
   */
  answer(
    id: string,
    decision: 'approved' | 'denied',
    by?: { platform: Platform; user: string },
  ): Promise<{ status: 'answered' } | { status: 'unknown' } | { status: 'not_allowed'; approvers: string[] }>;
}

/**
 * Where a message nobody sent goes (a schedule's `post`): an address in the terms bindings use,
 * and the thread, when it exists already.
 */
export interface ThreadTarget {
  address: Address;
  /** An existing thread (a Slack ts, a Discord thread id, a ClickUp task id); absent: open a new one. */
  thread?: string;
  /** Stable for the run that asks (`schedule-<name>-<tick>`), for platforms whose threads the caller names (local). */
  idHint: string;
}

/** A conversation opened by the gateway: its key and reply target exactly as `parse` makes them for a message in it. */
export interface OpenedThread {
  conversation: string;
  replyTo?: string;
}

/**
 * An adapter that can start a conversation on its own (scheduled runs). Kept apart from
 * ChannelAdapter so adapters grow it one by one; `canOpenThreads` tells which have (all four do).
 */
export interface ThreadOpener {
  /**
   * Opens a thread at `target`: posts `opener` as its first message (Slack: a channel message
   * whose ts is the thread; Discord: a channel message and a thread on it, or a reply chain where
   * threads are refused; ClickUp: a comment on the task `target.thread`), or, for a Slack or
   * Discord `target.thread` that exists, only checks and names it. A failed post is reported
   * (`onDeliveryFailure`, kind `opener`, logged at error level) and thrown: a retryable
   * AgentVmError on transient platform failures, any other for a target it cannot reach. The
   * local channel posts nothing (nobody is waiting on it).
   */
  openThread(target: ThreadTarget, opener: string): Promise<OpenedThread>;
}

export function canOpenThreads(a: ChannelAdapter): a is ChannelAdapter & ThreadOpener {
  return typeof (a as Partial<ThreadOpener>).openThread === 'function';
}
