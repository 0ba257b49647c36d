/**
 * Approvals as the gateway runs them: the broker keeps requests in the database; a new request is
 * written to the turn's transcript and shown in the conversation's channel (with buttons where the
 * adapter has them, else as progress text naming the operator API), and the posted request is
 * updated when it is answered or expires.
 *
 * Who may answer through a channel: the profile's `tools.approvers` (`<platform>:<user id>`) when
 * it names any, else the person whose message started the turn. The operator API (bearer token)
 * may always answer.
 *
 * However a request ends (answered, timed out, cancelled, shutdown), the posted prompt is updated,
 * even when it ends before the prompt was posted: the update then follows the post.
 */
import type { ApprovalPrompt, ChannelAdapter, Platform } from '../adapters/types.js';
import { createApprovalBroker, type ApprovalBroker, type ApprovalRequest, type PendingApproval } from '../governance/approvals.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/index.js';
import type { Router } from './router.js';
import type { TurnSignals } from './watch.js';

const SUMMARY_MAX = 300;

export function createGatewayApprovals(o: {
  store: Store;
  router: () => Router;
  adapters: ReadonlyMap<Platform, ChannelAdapter>;
  signals: TurnSignals;
  logger: Logger;
  timeoutMs: number;
  metrics?: Metrics;
}): ApprovalBroker {
  const log = o.logger.child({ component: 'approvals' });
  /** Requests this process is posting or posted, by id: the settle step updates the same message. */
  const posted = new Map<string, Promise<{ adapter: ChannelAdapter; prompt: ApprovalPrompt } | undefined>>();

  async function describe(req: ApprovalRequest): Promise<{ eventId?: string; approvers: string[] }> {
    const ev = await o.store.gateway.nextOpenEvent(req.profile, req.sessionKey);
    const named = o.router().profiles.get(req.profile)?.tools.approvers ?? [];
    if (named.length > 0) return { ...(ev ? { eventId: ev.id } : {}), approvers: [...named] };
    if (!ev) return { approvers: [] };
    const p = ev.payload as { platform?: string; user?: { id?: string } };
    return { eventId: ev.id, approvers: p.platform && p.user?.id ? [`${p.platform}:${p.user.id}`] : [] };
  }

  /** Posts the request; resolves with what to update when it settles (undefined: nothing with buttons was posted). */
  async function ask(req: PendingApproval): Promise<{ adapter: ChannelAdapter; prompt: ApprovalPrompt } | undefined> {
    if (!req.eventId) return undefined;
    const ev = await o.store.gateway.getEvent(req.eventId);
    if (!ev) return undefined;
    const payload = ev.payload as { platform: Platform; replyTo?: string };
    const seconds = Math.round((req.expiresAt.getTime() - req.requestedAt.getTime()) / 1000);
    const summary = summarize(req.arguments);
    const text =
      `Approval needed: the agent wants to call ${req.tool}${summary ? ` with ${summary}` : ''}. ` +
      `Approve or deny within ${seconds} s with POST /v1/approvals/${req.id} {"decision":"approved"|"denied"}; no answer means denied.`;
    await o.store.gateway.addTranscript({ conversation: ev.conversation, profile: req.profile, eventId: ev.id, kind: 'progress', text, meta: { approvalId: req.id, tool: req.tool } });
    o.signals.ping(ev.id);
    const adapter = o.adapters.get(payload.platform);
    if (!adapter) return undefined;
    if (!adapter.askApproval) {
      await adapter.send({ kind: 'progress', conversation: ev.conversation, replyTo: payload.replyTo, eventId: ev.id, text });
      return undefined;
    }
    const prefix = `${payload.platform}:`;
    const prompt: ApprovalPrompt = {
      id: req.id,
      conversation: ev.conversation,
      ...(payload.replyTo ? { replyTo: payload.replyTo } : {}),
      eventId: ev.id,
      tool: req.tool,
      summary,
      approvers: req.approvers.filter((a) => a.startsWith(prefix)).map((a) => a.slice(prefix.length)),
      expiresAt: req.expiresAt,
    };
    await adapter.askApproval(prompt);
    return { adapter, prompt };
  }

  return createApprovalBroker({
    store: o.store.approvals,
    timeoutMs: o.timeoutMs,
    describe,
    onRequest: (req) => {
      posted.set(
        req.id,
        ask(req).catch((err: unknown) => {
          log.warn({ err, approval: req.id }, 'could not post the approval request');
          return undefined;
        }),
      );
    },
    onSettled: (req, decision, by) => {
      o.metrics?.approvalSettled(req.profile, decision);
      const shown = posted.get(req.id);
      posted.delete(req.id);
      void shown
        ?.then((s) => s?.adapter.approvalSettled?.(s.prompt, { decision, by }))
        .catch((err: unknown) => log.warn({ err, approval: req.id }, 'could not update the approval request'));
    },
  });
}

/** The arguments as one short line for a person to judge (already redacted by the proxy). */
function summarize(args: Record<string, unknown> | undefined): string {
  if (!args || Object.keys(args).length === 0) return '';
  const json = JSON.stringify(args);
  return json.length <= SUMMARY_MAX ? json : `${json.slice(0, SUMMARY_MAX - 1)}…`;
}
