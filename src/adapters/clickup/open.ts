/**
 * Conversations agent-vm starts itself on ClickUp (a schedule's `post`): the conversation is the
 * task `target.thread` names, checked first (`GET /task`) to lie where the target says (its team,
 * and its space, folder and list where the target names them, so a schedule never posts to a
 * task outside the binding that allowed it); then the opener is a comment on the task, and it
 * stands where a person's comment would (`replyTo`): earlier comments are the turn's context, the
 * answer is the next comment. ClickUp has no threads to open: a target without a task is refused.
 *
 * Failures are reported (kind `opener`) and thrown, so the scheduler records the run as failed.
 */
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ReportFailure } from '../delivery.js';
import type { OpenedThread, ThreadTarget } from '../types.js';
import type { ClickUpClient } from './client.js';
import { encodeConversation, encodeReplyTo, taskAddress } from './parse.js';

const TASK = /^[A-Za-z0-9_-]{1,64}$/;

function codeOf(err: unknown): string {
  const m = /HTTP (\d{3})/.exec(describeError(err));
  return m ? `HTTP ${m[1]}` : isAgentVmError(err) ? err.code : 'error';
}

export function createClickUpOpener(deps: { client: ClickUpClient; logger: Logger; report: ReportFailure; now: () => number }) {
  async function open(target: ThreadTarget, opener: string): Promise<OpenedThread> {
    const a = target.address;
    if (a.platform !== 'clickup') throw new AgentVmError('clickup_bad_target', 'a ClickUp thread needs a ClickUp address', { status: 400 });
    const taskId = target.thread;
    if (taskId === undefined || !TASK.test(taskId)) {
      throw new AgentVmError('clickup_bad_target', 'a ClickUp post names its task (post.thread: the task id)', { status: 400 });
    }
    const where = taskAddress(await deps.client.getTask(taskId));
    if (where?.platform !== 'clickup' || where.team !== a.team) {
      throw new AgentVmError('clickup_bad_target', `task ${taskId} is not in workspace ${a.team}`, { status: 400 });
    }
    for (const k of ['space', 'folder', 'list'] as const) {
      if (a[k] !== undefined && a[k] !== where[k]) {
        throw new AgentVmError('clickup_bad_target', `task ${taskId} is not in ${k} ${a[k]} (it is in ${where[k] ?? 'none'})`, { status: 400 });
      }
    }
    const made = await deps.client.postComment(taskId, opener);
    const id = String(made.id);
    const date = typeof made.date === 'number' && Number.isFinite(made.date) ? made.date : deps.now();
    deps.logger.info({ taskId, comment: id }, 'clickup: opened a scheduled run on a task');
    const replyTo = encodeReplyTo(id, String(Math.trunc(date)));
    return { conversation: encodeConversation(taskId), ...(TASK.test(id) ? { replyTo } : {}) };
  }

  return async function openThread(target: ThreadTarget, opener: string): Promise<OpenedThread> {
    try {
      return await open(target, opener);
    } catch (err) {
      deps.report({ kind: 'opener', step: target.thread !== undefined ? 'comment' : 'task', code: codeOf(err), retryable: false, shown: false }, { eventId: target.idHint, err });
      throw err;
    }
  };
}
