/**
 * One schedule tick → one message, through the same intake as every platform's message: the
 * agent is woken exactly as if a person had written `prompt` in the thread `post` names.
 *
 *   1. claim the tick (store.scheduleRuns): a tick seen by several schedulers or gateways runs once;
 *   2. overlap: `skip` drops the tick while the previous run's turn is still open, `queue` waits
 *      for it (and for earlier waiting ticks, in order), `allow` goes ahead;
 *   3. the thread: an existing one (`post.thread`), or a new one the channel's adapter opens
 *      (`ChannelAdapter.openThread`), so each run is a conversation with its own transcript;
 *   4. the event (`schedule:<profile>:<name>:<tick>`) must route to this very profile, then it is
 *      accepted: stored, queued and run like any message; its turn is audited like one;
 *   5. the run row and a `schedule.run` audit row say what happened.
 *
 * A tick whose thread could not be opened (the platform refused the post, the task is elsewhere)
 * is a failed run: its row and a `schedule.run` audit row (decision `error`) say why, the log has
 * it at error level, and the adapter reported it (`onDeliveryFailure`, kind `opener`).
 *
 * Deliberately left out: retries of a tick whose thread could not be opened (the next tick runs;
 * the platform clients already waited out rate limits).
 */
import { canOpenThreads, type Address, type ChannelAdapter, type InboundEvent, type Intake, type Platform } from '../adapters/types.js';
import { describeError } from '../errors.js';
import type { AuditEntry } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import { bindingCovers, describePost, type Schedule } from '../governance/profile-jobs.js';
import type { Logger } from '../log.js';
import type { EventRepo } from '../store/events.js';
import type { ScheduleRunRepo } from '../store/schedules.js';

export interface FireDeps {
  runs: ScheduleRunRepo;
  events: Pick<EventRepo, 'getEvent'>;
  intake: Intake;
  /** The router's verdict for an event: which profile it would reach. */
  route: (event: Pick<InboundEvent, 'address' | 'text'>) => { ok: true; profile: { id: string } } | { ok: false; message: string };
  adapters: ReadonlyMap<Platform, ChannelAdapter>;
  record: (e: AuditEntry) => Promise<unknown>;
  logger: Logger;
  /** How often a `queue` tick re-checks the run ahead of it. Default 1 s. */
  pollMs?: number;
  /** A waiting tick not touched for this long belongs to a scheduler that died. Default 60 s. */
  staleWaitMs?: number;
  /** True once the scheduler is closing: waiting ticks give up. */
  closing: () => boolean;
}

export type FireOutcome =
  | { status: 'duplicate' }
  | { status: 'started'; eventId: string; conversation: string }
  | { status: 'skipped' | 'rejected' | 'failed'; reason: string };

const OPEN_EVENT = new Set(['queued', 'running', 'replied']);

/** `2026-12-05T09:00:00Z` → `20261205T090000Z`: a thread id every adapter accepts. */
export function tickStamp(tick: Date): string {
  return tick.toISOString().replace(/\.\d+Z$/, 'Z').replace(/[-:]/g, '');
}

export function scheduleEventId(profile: string, schedule: string, tick: Date): string {
  return `schedule:${profile}:${schedule}:${tickStamp(tick)}`;
}

/** The address bindings use for `post` (the local channel names its profile). */
export function postAddress(profile: string, s: Schedule): Address {
  const p = s.post;
  switch (p.platform) {
    case 'local':
      return { platform: 'local', profile, channel: p.channel! };
    case 'slack':
      return { platform: 'slack', team: p.team!, channel: p.channel! };
    case 'discord':
      return { platform: 'discord', guild: p.guild!, channel: p.channel! };
    case 'clickup':
      return { platform: 'clickup', team: p.team!, ...(p.space ? { space: p.space } : {}), ...(p.folder ? { folder: p.folder } : {}), ...(p.list ? { list: p.list } : {}) };
  }
}

export async function fireTick(d: FireDeps, profile: Profile, s: Schedule, tick: Date, catchUp = false): Promise<FireOutcome> {
  const log = d.logger.child({ profile: profile.id, schedule: s.name });
  const key = { profile: profile.id, schedule: s.name, tick };
  if (!(await d.runs.claim({ ...key, status: 'waiting', catchUp }))) return { status: 'duplicate' };
  const audit = (decision: string, reason: string | null, data: Record<string, unknown> = {}) =>
    d.record({ profile: profile.id, action: 'schedule.run', decision, subject: s.name, reason, data: { tick: tick.toISOString(), catchUp, overlap: s.overlap, ...data } });
  const end = async (status: 'skipped' | 'rejected' | 'failed', reason: string): Promise<FireOutcome> => {
    await d.runs.update(profile.id, s.name, tick, { status, reason });
    await audit(status === 'skipped' ? 'skip' : status === 'rejected' ? 'reject' : 'error', reason);
    // A failed run (the post could not be made, the channel is missing) is the operator's to fix.
    if (status === 'failed') log.error({ tick: tick.toISOString(), status, reason }, 'schedule run failed');
    else log.info({ tick: tick.toISOString(), status, reason }, 'schedule tick not run');
    return { status, reason };
  };
  try {
    const ahead = await runAhead(d, profile.id, s.name, tick);
    if (ahead && s.overlap === 'skip') return await end('skipped', `the run of ${ahead} is still going (overlap: skip)`);
    if (ahead && s.overlap === 'queue') {
      for (let busy: string | undefined = ahead; busy; busy = await runAhead(d, profile.id, s.name, tick)) {
        if (d.closing()) return await end('failed', 'the gateway stopped while this tick waited for the run ahead of it (overlap: queue)');
        await d.runs.update(profile.id, s.name, tick, { status: 'waiting', reason: `waiting for the run of ${busy}` });
        await new Promise((r) => setTimeout(r, d.pollMs ?? 1000));
      }
    }
    const adapter = d.adapters.get(s.post.platform);
    if (!adapter) return await end('failed', `the ${s.post.platform} channel is not configured in this gateway`);
    if (!canOpenThreads(adapter)) return await end('failed', `the ${s.post.platform} adapter cannot open threads for scheduled runs`);
    const address = postAddress(profile.id, s);
    // ClickUp routes by the trigger mention in the text (the intake strips it again).
    const trigger = s.post.platform === 'clickup' ? (profile.bindings.find((b) => bindingCovers(b, s.post)) as { trigger?: string } | undefined)?.trigger : undefined;
    const text = trigger ? `${trigger} ${s.prompt}` : s.prompt;
    // Routed before anything is posted: a run refused here leaves no opener behind.
    const route = d.route({ address, text });
    if (!route.ok) return await end('rejected', route.message);
    if (route.profile.id !== profile.id) return await end('rejected', `${describePost(s.post)} routes to profile ${route.profile.id}, not ${profile.id} (a more specific binding wins)`);
    let opened: { conversation: string; replyTo?: string };
    try {
      opened = await adapter.openThread(
        { address, ...(s.post.thread ? { thread: s.post.thread } : {}), idHint: `schedule-${s.name}-${tickStamp(tick)}` },
        `Scheduled run "${s.name}" (${tick.toISOString()})`,
      );
    } catch (err) {
      return await end('failed', `could not open a thread on ${describePost(s.post)}: ${describeError(err)}`);
    }
    const { conversation, replyTo } = opened;
    const event: InboundEvent = {
      id: scheduleEventId(profile.id, s.name, tick),
      platform: s.post.platform,
      address,
      conversation,
      ...(replyTo !== undefined ? { replyTo } : {}),
      user: { id: `schedule:${s.name}`, name: `schedule ${s.name}` },
      text,
      receivedAt: new Date().toISOString(),
    };
    const r = await d.intake.accept(event);
    if (r.status === 'rejected') return await end('rejected', r.message);
    await d.runs.update(profile.id, s.name, tick, { status: 'started', eventId: event.id, conversation, reason: null });
    await audit('allow', null, { event: event.id, conversation });
    log.info({ tick: tick.toISOString(), eventId: event.id, catchUp }, 'schedule tick started a turn');
    return { status: 'started', eventId: event.id, conversation };
  } catch (err) {
    log.error({ err: describeError(err), tick: tick.toISOString() }, 'schedule tick failed');
    return end('failed', describeError(err)).catch(() => ({ status: 'failed' as const, reason: describeError(err) }));
  }
}

/**
 * The tick of the run still ahead of `tick` (its turn open, or itself waiting), or undefined when
 * the way is clear. A waiting run nobody has touched for `staleWaitMs` died with its scheduler.
 */
async function runAhead(d: FireDeps, profile: string, schedule: string, tick: Date): Promise<string | undefined> {
  const prev = await d.runs.last(profile, schedule, tick);
  if (!prev) return undefined;
  if (prev.status === 'waiting') {
    const stale = Date.now() - prev.updatedAt.getTime() > (d.staleWaitMs ?? 60_000);
    return stale ? undefined : prev.tick.toISOString();
  }
  const started = prev.status === 'started' ? prev : (await d.runs.startedBefore(profile, schedule, tick, 1))[0];
  if (!started?.eventId) return undefined;
  const ev = await d.events.getEvent(started.eventId);
  return ev && OPEN_EVENT.has(ev.status) ? started.tick.toISOString() : undefined;
}
