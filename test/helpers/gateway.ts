/**
 * A real gateway for tests: real store (PGlite or Postgres), real Docker + runsc sandboxes
 * running the reference agent, profiles written to a temp directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { localEvent, type LocalMessage, localMessageSchema } from '../../src/adapters/local/index.js';
import type { TurnOutcome } from '../../src/adapters/types.js';
import { startGatewayApp, type Running } from '../../src/app.js';
import { openContext, type Context } from '../../src/context.js';
import type { TurnPolicy } from '../../src/gateway/index.js';
import { createLogger, type Logger } from '../../src/log.js';
import { tempDir, testConfig } from './env.js';

export const REFERENCE_AGENT = ['node', '/opt/agent-vm/agents/reference/agent.mjs'];

/** A unique profile id (also the agent id), so parallel test files never share a sandbox. */
export const profileId = (label: string) => `t-${label}-${randomBytes(3).toString('hex')}`;

export function manifest(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 1,
    id,
    name: `Test ${id}`,
    agent: { command: REFERENCE_AGENT },
    runtime: 'runsc',
    limits: { cpus: 1, memoryMiB: 256, pids: 128 },
    risk: 'L1',
    bindings: [{ platform: 'local', channels: ['*'] }],
    ...extra,
  };
}

export async function writeProfiles(dir: string, manifests: Array<Record<string, unknown> | { file: string; text: string }>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const m of manifests) {
    if ('file' in m && typeof m.file === 'string') await writeFile(path.join(dir, m.file), m.text as string);
    else await writeFile(path.join(dir, `${(m as { id: string }).id}.yaml`), stringify(m));
  }
}

export interface TestGateway {
  ctx: Context;
  running: Running;
  profilesDir: string;
  /** Sends through the local channel and waits for the outcome. */
  send(m: LocalMessage): Promise<{ eventId: string; conversation: string; progress: string[]; outcome: TurnOutcome }>;
  /**
   * Waits until the event is terminal and the unit of `profile` is idle, so every platform call of
   * the turn has been made; `calls` tells what the platform's fake saw, for the error after 30 s.
   */
  settled(eventId: string, profile: string, calls: () => string): Promise<void>;
  close(): Promise<void>;
}

export async function startTestGateway(opts: {
  manifests: Array<Record<string, unknown> | { file: string; text: string }>;
  env?: Record<string, string>;
  units?: 'all' | 'none' | string[];
  policy?: Partial<TurnPolicy>;
  approvalTimeoutMs?: number;
  /** The gateway's logger (default: silent, or debug on stderr with TEST_LOG_LEVEL=debug). */
  logger?: Logger;
}): Promise<TestGateway> {
  const profilesDir = tempDir('profiles');
  await writeProfiles(profilesDir, opts.manifests);
  const config = testConfig({ AGENTVM_DATA_DIR: tempDir('data'), AGENTVM_PROFILES_DIR: profilesDir, ...opts.env });
  const ctx = await openContext(config, opts.logger ?? createLogger(process.env.TEST_LOG_LEVEL === 'debug' ? 'debug' : 'silent'));
  const running = await startGatewayApp(ctx, { units: opts.units ?? 'all', policy: opts.policy, approvalTimeoutMs: opts.approvalTimeoutMs });
  const agentIds = opts.manifests.flatMap((m) => (typeof (m as { id?: unknown }).id === 'string' ? [(m as { id: string }).id] : []));
  return {
    ctx,
    running,
    profilesDir,
    async send(m) {
      const event = localEvent(localMessageSchema.parse(m), 'test');
      const r = await running.gateway.intake.accept(event);
      if (r.status === 'rejected') return { eventId: event.id, conversation: event.conversation, progress: [], outcome: { kind: 'notice', text: r.message } };
      const progress: string[] = [];
      let outcome: TurnOutcome | undefined;
      for await (const o of running.gateway.watcher.watch(event.id)) {
        if (o.kind === 'progress') progress.push(o.text);
        else outcome = o;
      }
      return { eventId: event.id, conversation: event.conversation, progress, outcome: outcome! };
    },
    async settled(eventId, profile, calls) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const row = await ctx.store.gateway.getEvent(eventId);
        if (row && ['delivered', 'failed', 'rejected'].includes(row.status)) break;
        if (Date.now() > deadline) throw new Error(`${eventId} stuck in ${row?.status}; calls: ${calls()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await running.gateway.units.get(profile)!.idle();
    },
    async close() {
      await running.stop();
      await Promise.allSettled(agentIds.map((id) => ctx.driver.destroy(id)));
      await ctx.close();
    },
  };
}

export function replyText(o: TurnOutcome): string {
  return o.kind === 'reply' ? o.text : `<${o.kind}: ${o.text}>`;
}
