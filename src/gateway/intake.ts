/**
 * The front door every adapter calls: route, store, queue. The event is in the database before
 * `accept` resolves (so before the platform is acknowledged), and an id seen before never
 * queues a second turn. The route decision's audit row is written behind, in batches: the
 * event row (with its profile or rejection) is the durable record, and an ack stays cheap.
 */
import type { InboundEvent, Intake, IntakeResult } from '../adapters/types.js';
import type { AuditQueue } from '../governance/audit-queue.js';
import type { Logger } from '../log.js';
import type { GatewayRepo } from '../store/gateway.js';
import type { QueueFactory } from './queue.js';
import { stripMention, type Router } from './router.js';

export function createIntake(o: { router: () => Router; repo: GatewayRepo; queues: QueueFactory; audit: AuditQueue; logger: Logger }): Intake {
  const log = o.logger.child({ component: 'intake' });
  return {
    async accept(event: InboundEvent): Promise<IntakeResult> {
      const route = o.router().route(event);
      if (!route.ok) {
        const { row: seen, inserted } = await o.repo.insertEvent({
          id: event.id,
          platform: event.platform,
          profile: null,
          conversation: event.conversation,
          status: 'rejected',
          payload: event,
          error: route.message,
        });
        if (!inserted) return { status: 'duplicate', profile: null, conversation: seen.conversation };
        void o.audit.push({ action: 'route', decision: 'reject', reason: route.detail, subject: event.id, data: { platform: event.platform } });
        log.info({ eventId: event.id, reason: route.reason }, 'event rejected');
        return { status: 'rejected', reason: route.reason, message: route.message };
      }
      const profile = route.profile.id;
      // A ClickUp trigger is how the comment addressed the agent, not part of the request (as a
      // Slack adapter strips the bot mention).
      const stored = route.binding.platform === 'clickup' ? { ...event, text: stripMention(event.text, route.binding.trigger) } : event;
      const { row, inserted } = await o.repo.insertEvent({
        id: event.id,
        platform: event.platform,
        profile,
        conversation: event.conversation,
        status: 'queued',
        payload: stored,
      });
      if (!inserted) {
        // A redelivery. If the first delivery was stored but never queued (a crash in between),
        // queue it now; the job is a no-op if the turn already ran.
        if (row.status === 'queued' && row.profile) await o.queues.queue(row.profile).add({ eventId: row.id, conversation: row.conversation });
        log.debug({ eventId: event.id }, 'duplicate event');
        return { status: 'duplicate', profile: row.profile, conversation: row.conversation };
      }
      void o.audit.push({ profile, action: 'route', decision: 'allow', subject: event.id, data: { platform: event.platform } });
      await o.queues.queue(profile).add({ eventId: event.id, conversation: event.conversation });
      log.info({ eventId: event.id, profile }, 'event queued');
      return { status: 'accepted', profile };
    },
  };
}
