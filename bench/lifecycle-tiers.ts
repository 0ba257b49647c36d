/**
 * Wake latency by tier (issue 13 §3): "message accepted → the agent's first session/update",
 * through the real gateway (PGlite, in-process queue, runsc, the reference agent answering
 * `progress 1` — one plan update, then its answer), for each tier a wake can start from:
 *
 *   warm          the agent is awake (the floor every other tier is compared to)
 *   paused        idle past idle.pauseAfterSeconds: the wake is an unpause
 *   stopped       asleep (snapshot + stop), volume present: the wake is a start
 *   restored      asleep and its volume gone: the wake restores the newest snapshot generation
 *   pool_hit      first message ever, with a sandbox the warm pool prepared
 *   cold          first message ever, nothing prepared: create + start
 *
 * Beside each, the bare engine doing the same container operation plus the same agent start
 * (dockerode: unpause / start / create+start of an equivalent container, attach, ACP initialize,
 * session/new, the same prompt, until its first update), interleaved in the same run.
 * Prints one JSON object with the run's conditions. Targets: paused p95 ≤ warm p95 + 100 ms;
 * stopped ≤ 1.15 × bare; pool hit p95 ≤ 150 ms.
 *
 *   npm run bench:tiers -- [--iterations 8]
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import * as acp from '@agentclientprotocol/sdk';
import Docker from 'dockerode';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startGatewayApp } from '../src/app.js';
import { openContext } from '../src/context.js';
import { createLogger } from '../src/log.js';
import { conversationPaths } from '../src/sandbox/layout.js';
import { manifest, writeProfiles } from '../test/helpers/gateway.js';
import { tempDir, testConfig } from '../test/helpers/env.js';
import { summary } from './stats.js';

const { values } = parseArgs({ options: { iterations: { type: 'string', default: '8' } } });
const N = Number(values.iterations);
const tag = randomBytes(3).toString('hex');
const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const REF = ['node', '/opt/agent-vm/agents/reference/agent.mjs'];
const PROMPT = 'progress 1';

const ids = {
  warm: `tier-warm-${tag}`,
  paused: `tier-paused-${tag}`,
  stopped: `tier-stopped-${tag}`,
  restored: `tier-restored-${tag}`,
  pool: Array.from({ length: N }, (_, i) => `tier-pool${i}-${tag}`),
  cold: Array.from({ length: N }, (_, i) => `tier-cold${i}-${tag}`),
};
const poolSet = new Set(ids.pool);
const all = [ids.warm, ids.paused, ids.stopped, ids.restored, ...ids.pool, ...ids.cold];
const profilesDir = tempDir('tier-profiles');
await writeProfiles(profilesDir, all.map((id) => manifest(id, id === ids.paused ? { idle: { pauseAfterSeconds: 1, sleepAfterSeconds: 3600 } } : { idle: { pauseAfterSeconds: 3600, sleepAfterSeconds: 3600 } })));
// The pool is driven by hand (Unit.prepare, as AGENTVM_WARM_POOL would), so the cold agents stay cold.
const config = testConfig({ AGENTVM_DATA_DIR: tempDir('tier-data'), AGENTVM_PROFILES_DIR: profilesDir, AGENTVM_WARM_POOL: '0' });
const ctx = await openContext(config, createLogger('silent'));
const running = await startGatewayApp(ctx, { units: 'all' });
const gw = running.gateway;

/** Accepted → the first progress entry (the agent's plan update) of that turn, in ms. */
async function firstUpdate(profile: string, conversation: string): Promise<number> {
  const event = localEvent(localMessageSchema.parse({ profile, text: PROMPT, conversation }), 'bench');
  const accepted = await gw.intake.accept(event);
  if (accepted.status !== 'accepted') throw new Error(`not accepted: ${JSON.stringify(accepted)}`);
  const t0 = performance.now();
  let first: number | undefined;
  for await (const o of gw.watcher.watch(event.id)) {
    if (o.kind === 'progress' && first === undefined) first = performance.now() - t0;
    if (o.kind === 'notice') throw new Error(`turn failed: ${o.text}`);
  }
  await gw.units.get(profile)!.idle();
  if (first === undefined) throw new Error('no update seen');
  return first;
}

async function until(what: string, fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const stateOf = async (id: string) => (await ctx.driver.status(id)).state;

/** The bare engine: `op` puts an equivalent container in the state to wake from; then attach, ACP, the prompt. */
async function bare(kind: 'unpause' | 'start' | 'create'): Promise<number> {
  const name = `tier-bare-${kind}-${randomBytes(3).toString('hex')}`;
  const body = {
    Image: config.image, Cmd: REF, User: '1000:1000', WorkingDir: '/workspace', OpenStdin: true, StdinOnce: false, AttachStdin: true, AttachStdout: true, AttachStderr: true,
    NetworkDisabled: true,
    HostConfig: { Runtime: 'runsc', NetworkMode: 'none', ReadonlyRootfs: true, CapDrop: ['ALL'], SecurityOpt: ['no-new-privileges:true'], Init: true, Tmpfs: { '/tmp': 'rw,size=64m' }, Memory: 256 * 1048576, NanoCpus: 1e9, PidsLimit: 128, Mounts: [{ Type: 'volume' as const, Source: `${name}-ws`, Target: '/workspace' }] },
  };
  let c: Docker.Container | undefined;
  if (kind !== 'create') {
    c = await docker.createContainer({ ...body, name });
    await c.start();
    if (kind === 'unpause') await c.pause();
    else await c.stop({ t: 1 });
  }
  const t0 = performance.now();
  if (kind === 'create') {
    c = await docker.createContainer({ ...body, name });
    await c.start();
  } else if (kind === 'start') await c!.start();
  else await c!.unpause();
  const stream = (await c!.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as unknown as NodeJS.ReadWriteStream & { destroy(): void };
  const { PassThrough } = await import('node:stream');
  const out = new PassThrough();
  docker.modem.demuxStream(stream, out, new PassThrough());
  let resolveFirst!: () => void;
  const gotFirst = new Promise<void>((r) => (resolveFirst = r));
  const conn = acp
    .client({ name: 'bench' })
    .onNotification('session/update', () => resolveFirst())
    .connect(acp.ndJsonStream(Writable.toWeb(stream as unknown as Writable) as WritableStream<Uint8Array>, Readable.toWeb(out) as ReadableStream<Uint8Array>));
  await conn.agent.request('initialize', { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
  const cwd = conversationPaths(`bench:${name}`).cwd;
  const s = await conn.agent.request('session/new', { cwd, mcpServers: [] });
  void conn.agent.request('session/prompt', { sessionId: s.sessionId, prompt: [{ type: 'text', text: PROMPT }] }).catch(() => undefined);
  await gotFirst;
  const ms = performance.now() - t0;
  stream.destroy();
  await c!.remove({ force: true });
  await docker.getVolume(`${name}-ws`).remove().catch(() => undefined);
  return ms;
}

const r: Record<string, number[]> = { warm: [], paused: [], stopped: [], restored: [], pool_hit: [], cold: [], bare_unpause: [], bare_start: [], bare_create: [] };
try {
  // Everyone answers once first (the pool and cold agents excepted): later turns are wakes.
  for (const id of [ids.warm, ids.paused, ids.stopped, ids.restored]) await firstUpdate(id, 'c');
  for (let i = 0; i < N; i++) {
    r.warm!.push(await firstUpdate(ids.warm, 'c'));

    await until('paused', async () => (await stateOf(ids.paused)) === 'paused');
    r.paused!.push(await firstUpdate(ids.paused, 'c'));
    r.bare_unpause!.push(await bare('unpause'));

    await gw.units.get(ids.stopped)!.sleep('bench');
    r.stopped!.push(await firstUpdate(ids.stopped, 'c'));
    r.bare_start!.push(await bare('start'));

    await gw.units.get(ids.restored)!.sleep('bench');
    await docker.getContainer(`agentvm-${ids.restored}`).remove({ force: true });
    await docker.getVolume(`agentvm-${ids.restored}-workspace`).remove();
    r.restored!.push(await firstUpdate(ids.restored, 'c'));

    // The pool: prepared ahead (as AGENTVM_WARM_POOL would), then its first message.
    const pid = ids.pool[i]!;
    if (!(await gw.units.get(pid)!.prepare())) throw new Error('nothing prepared');
    r.pool_hit!.push(await firstUpdate(pid, 'c'));
    r.cold!.push(await firstUpdate(ids.cold[i]!, 'c'));
    r.bare_create!.push(await bare('create'));
  }
  const s = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, summary(v)]));
  const pools = (await gw.audit.tail(5000)).filter((x) => x.action === 'wake' && poolSet.has(x.profile ?? '')).map((x) => (x.data as { pool?: string }).pool);
  console.log(
    JSON.stringify(
      {
        bench: 'lifecycle-tiers',
        measure: 'message accepted → first session/update (ms)',
        conditions: { runtime: 'runsc', backend: 'pglite', cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), node: process.version, iterations: N, commit: execFileSync('git', ['rev-parse', '--short', 'HEAD']).toString().trim() },
        tiers: s,
        pool_outcomes: pools,
        targets: {
          paused_p95_over_warm_ms: { value: Math.round(s.paused!.p95 - s.warm!.p95), target: 100, met: s.paused!.p95 - s.warm!.p95 <= 100 },
          stopped_ratio_p50_vs_bare: { value: Math.round((s.stopped!.p50 / s.bare_start!.p50) * 100) / 100, target: 1.15, met: s.stopped!.p50 / s.bare_start!.p50 <= 1.15 },
          stopped_ratio_p95_vs_bare: { value: Math.round((s.stopped!.p95 / s.bare_start!.p95) * 100) / 100, target: 1.15, met: s.stopped!.p95 / s.bare_start!.p95 <= 1.15 },
          pool_hit_p95_ms: { value: s.pool_hit!.p95, target: 150, met: s.pool_hit!.p95 <= 150 },
        },
      },
      null,
      2,
    ),
  );
} finally {
  await running.stop();
  for (const id of all) await ctx.driver.destroy(id, { finalSnapshot: false }).catch(() => undefined);
  await ctx.close();
}
