/**
 * The health check a release passes before it serves anyone: its sandbox is started in the
 * agent's `trial` slot (a fresh copy of the newest snapshot generation, never the live workspace),
 * then ACP `initialize`, a new session, and the manifest's `health.probe` prompt (optional), all
 * within `health.timeoutSeconds`. The trial sandbox is removed afterwards, whatever happened.
 *
 * Deliberately left out: probes with tools or a model (no MCP servers, and the model relay honours
 * no token outside a person's turn).
 */
import { connectAgent, type AgentConnection } from '../gateway/acp.js';
import { describeError } from '../errors.js';
import type { HealthSettings } from '../governance/profile-release.js';
import type { Logger } from '../log.js';
import { WORKSPACE } from '../sandbox/layout.js';
import type { SandboxDriver, SandboxSpec } from '../sandbox/types.js';
import { printable } from '../text.js';
import type { HealthResult } from './types.js';

class Deadline extends Error {}

export async function healthCheck(driver: SandboxDriver, spec: SandboxSpec, health: HealthSettings, logger: Logger): Promise<HealthResult> {
  const trial = driver.slot('trial');
  const started = performance.now();
  const deadlineMs = health.timeoutSeconds * 1000;
  const steps: Record<string, number> = {};
  let step = 'start';
  let conn: AgentConnection | undefined;
  let generation: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Deadline()), deadlineMs);
  });
  expired.catch(() => undefined);
  const within = <T>(p: Promise<T>): Promise<T> => Promise.race([p, expired]);
  const mark = (name: string, t0: number) => (steps[name] = Math.round(performance.now() - t0));
  try {
    let t0 = performance.now();
    const h = await within(trial.ensure({ ...spec, slot: 'trial' }));
    generation = h.restoredFrom?.generation;
    mark('start', t0);
    step = 'initialize';
    t0 = performance.now();
    const io = await within(trial.attach(spec.agentId));
    const left = Math.max(1000, deadlineMs - (performance.now() - started));
    conn = await within(connectAgent(io, { logger, clientName: 'agent-vm-health', initTimeoutMs: left }));
    mark('initialize', t0);
    step = 'session';
    t0 = performance.now();
    const session = await within(conn.newSession({ cwd: WORKSPACE, mcpServers: [] }));
    mark('session', t0);
    if (health.probe) {
      step = 'probe';
      t0 = performance.now();
      let text = '';
      const stop = await within(
        conn.prompt(session, [{ type: 'text', text: health.probe.prompt }], {
          onUpdate(u) {
            if (u.sessionUpdate === 'agent_message_chunk' && u.content.type === 'text' && text.length < 100_000) text += u.content.text;
          },
          onPermission: async () => ({ allow: false, reason: 'a health probe may not use tools' }),
        }),
      );
      mark('probe', t0);
      if (stop !== 'end_turn') return fail('probe', `the probe prompt ended with ${stop}, not end_turn`);
      if (health.probe.expect && !text.includes(health.probe.expect)) {
        return fail('probe', `the probe's answer does not contain ${JSON.stringify(health.probe.expect)}: ${JSON.stringify(printable(text.slice(0, 200), 200))}`);
      }
    }
    return { ok: true, ms: Math.round(performance.now() - started), steps, ...(generation !== undefined ? { generation } : {}) };
  } catch (err) {
    if (err instanceof Deadline) return fail('deadline', `no healthy answer within ${health.timeoutSeconds} s (health.timeoutSeconds); still at ${step}`);
    return fail(step, describeError(err));
  } finally {
    clearTimeout(timer);
    conn?.close();
    await trial.discard(spec.agentId).catch((err: unknown) => logger.warn({ err: describeError(err), agentId: spec.agentId }, 'removing the trial sandbox failed'));
  }

  function fail(failed: string, why: string): HealthResult {
    return { ok: false, failed, why: printable(why, 500), ms: Math.round(performance.now() - started), steps, ...(generation !== undefined ? { generation } : {}) };
  }
}
