/**
 * Gateway units as separate processes on Postgres + Redis (BullMQ): a front door in this
 * process, each profile's unit in its own `agent-vm unit <profile>` process. Killing one unit
 * with SIGKILL in the middle of a turn loses nothing, answers once, and does not touch the other.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { until } from './helpers/wait.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const victim = profileId('unit-kill');
const bystander = profileId('unit-by');

let db: TestDatabase;
let front: TestGateway;
const children = new Set<ChildProcess>();

function startUnit(profile: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(root, 'bin/agent-vm.js'), 'unit', profile], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      AGENTVM_PROFILES_DIR: front.profilesDir,
      AGENTVM_DATA_DIR: front.ctx.config.dataDir,
      AGENTVM_RUNTIME: 'runsc',
      AGENTVM_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes(`unit ${profile} running`)) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`unit ${profile} exited with ${code}: ${output}`)));
  });
}

function kill9(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  front = await startTestGateway({
    manifests: [manifest(victim), manifest(bystander)],
    env: { DATABASE_URL: db.url, REDIS_URL: redisUrl },
    units: 'none',
  });
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) await kill9(c);
  await front?.close();
  await db?.drop();
});

describe('units in their own processes', () => {
  it('answers exactly once after its unit is SIGKILLed mid-turn and restarted; the other unit keeps answering', async () => {
    const [unitA] = await Promise.all([startUnit(victim), startUnit(bystander)]);
    expect(front.running.gateway.queues.kind).toBe('bullmq');

    // A warm-up turn on each, so both sandboxes exist.
    expect(replyText((await front.send({ profile: victim, text: 'echo ready' })).outcome)).toBe('ready');
    expect(replyText((await front.send({ profile: bystander, text: 'echo ready' })).outcome)).toBe('ready');

    const e = localEvent(localMessageSchema.parse({ profile: victim, text: 'slow 2500', conversation: 'kill' }), 'test');
    expect((await front.running.gateway.intake.accept(e)).status).toBe('accepted');
    // Wait until the turn is running inside the agent, then kill the unit.
    await until('the turn to start', async () => ((await front.ctx.store.gateway.getEvent(e.id))?.status === 'running' ? true : undefined));
    await new Promise((r) => setTimeout(r, 700));
    await kill9(unitA);
    expect((await front.ctx.store.gateway.getEvent(e.id))?.status).toBe('running');

    // The other unit is untouched.
    expect(replyText((await front.send({ profile: bystander, text: 'echo unaffected' })).outcome)).toBe('unaffected');

    await startUnit(victim);
    let outcome;
    for await (const o of front.running.gateway.watcher.watch(e.id)) if (o.kind !== 'progress') outcome = o;
    expect(replyText(outcome!)).toBe('slept 2500');
    const ev = await front.ctx.store.gateway.getEvent(e.id);
    expect(ev).toMatchObject({ status: 'delivered', attempts: 2 });
    const rows = await front.ctx.store.gateway.eventTranscript(e.id);
    expect(rows.filter((r) => r.kind === 'reply')).toHaveLength(1);
    expect(rows.filter((r) => r.kind === 'prompt')).toHaveLength(1);

    // And the restarted unit keeps serving the conversation.
    expect(replyText((await front.send({ profile: victim, text: 'echo after', conversation: 'kill' })).outcome)).toBe('after');
  });

  it('refuses to run a unit without shared services, with a clear error', async () => {
    const child = spawn(process.execPath, [path.join(root, 'bin/agent-vm.js'), 'unit', victim], {
      env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', AGENTVM_PROFILES_DIR: front.profilesDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(2);
    expect(err).toContain('set DATABASE_URL and REDIS_URL');
  });
});
