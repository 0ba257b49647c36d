/**
 * Releases under load: the pause a person sees when a release swaps in, and rollback time.
 * A real gateway (this process) serves one reference-agent profile on Docker + runsc; a loop sends
 * `echo` turns in two conversations without pause. Each round releases the other of two images
 * (a label apart) while the loop runs, then rolls back. Prints JSON:
 *
 * - `steadyTurnMs`: turn latency (accepted → reply stored) with no release under way;
 * - `firstTurnAfterSwapMs`: latency of each conversation's first turn started after the swap was
 *   written (what the person sees: the first turn on the new slot attaches to its agent);
 * - `acquireOnNewSlotMs`: the gateway's own figure for that first turn's connect (outcome.swapMs);
 * - `applyMs` / `healthMs`: the whole apply and its health check (no one waits for them);
 * - `rollbackSwapMs`: `release rollback` to a kept slot (the write), and `firstTurnAfterRollbackMs`;
 * - `rollbackRecreateMs`: rollback when the kept slot was removed (re-created from the digest).
 * Lost or failed turns are counted; both must be 0.
 *
 *   npm run bench:releases -- [--rounds 3]
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { stringify } from 'yaml';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startGatewayApp } from '../src/app.js';
import { releaseServiceFor } from '../src/cli/releases.js';
import { loadConfig } from '../src/config.js';
import { openContext } from '../src/context.js';
import { createLogger } from '../src/log.js';
import { summary } from './stats.js';

const run = promisify(execFile);
const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
const tag = randomBytes(3).toString('hex');
const id = `bench-rel-${tag}`;
const tmp = await mkdtemp(path.join(os.tmpdir(), 'agentvm-bench-rel-'));
const profilesDir = path.join(tmp, 'profiles');
await run('mkdir', ['-p', profilesDir]);

async function image(n: number): Promise<string> {
  const ref = `agentvm-release-bench/good:${tag}-${n}`;
  const dir = await mkdtemp(path.join(tmp, 'img-'));
  await writeFile(path.join(dir, 'Dockerfile'), `FROM agent-vm/agent:latest\nLABEL agent-vm.agent-version="bench-${n}"\n`);
  await run('docker', ['build', '-q', '-t', ref, dir]);
  return ref;
}
const images = [await image(1), await image(2)];
const writeProfile = (img: string) =>
  writeFile(path.join(profilesDir, `${id}.yaml`), stringify({
    version: 1, id, name: 'bench', agent: { command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'] }, image: img, runtime: 'runsc',
    limits: { cpus: 1, memoryMiB: 256, pids: 128 }, risk: 'L1', bindings: [{ platform: 'local', channels: ['*'] }], health: { timeoutSeconds: 60, probe: { prompt: 'echo ready', expect: 'ready' } },
  }));
await writeProfile(images[0]!);

const config = loadConfig({ ...process.env, AGENTVM_DATA_DIR: path.join(tmp, 'data'), AGENTVM_PROFILES_DIR: profilesDir, AGENTVM_RUNTIME: 'runsc', AGENTVM_LOG_LEVEL: 'silent' });
const ctx = await openContext(config, createLogger('silent'));
const running = await startGatewayApp(ctx, { units: 'all' });
const svc = releaseServiceFor(ctx);

async function send(text: string, conversation: string): Promise<{ ms: number; ok: boolean; started: number }> {
  const started = performance.now();
  const event = localEvent(localMessageSchema.parse({ profile: id, text, conversation }), 'bench');
  await running.gateway.intake.accept(event);
  let reply: string | undefined;
  for await (const o of running.gateway.watcher.watch(event.id)) if (o.kind !== 'progress') reply = o.kind === 'reply' ? o.text : `<${o.kind}>`;
  return { ms: performance.now() - started, ok: reply === text.slice(5), started };
}

const steady: number[] = [], firstAfterSwap: number[] = [], acquireOnNew: number[] = [], applyMs: number[] = [], healthMs: number[] = [];
const rollbackSwap: number[] = [], firstAfterRollback: number[] = [], rollbackRecreate: number[] = [];
let failed = 0, sent = 0;

try {
  await send('echo warm', 'c1');
  await svc.apply([id], { who: 'bench', why: 'first' });
  for (let i = 0; i < 5; i++) steady.push((await send(`echo s${i}`, 'c1')).ms);
  for (let round = 0; round < rounds; round++) {
    await writeProfile(images[(round + 1) % 2]!);
    let stop = false;
    const turns: Array<{ ms: number; ok: boolean; started: number; conv: string }> = [];
    const loop = async (conv: string) => {
      for (let i = 0; !stop; i++) {
        sent++;
        const r = await send(`echo ${conv}-${round}-${i}`, conv);
        if (!r.ok) failed++;
        turns.push({ ...r, conv });
      }
    };
    const loops = [loop('c1'), loop('c2')];
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = performance.now();
    const [res] = await svc.apply([id], { who: 'bench', why: `round ${round}` });
    const swappedAt = performance.now();
    if (res?.outcome !== 'swapped') throw new Error(`apply: ${res?.outcome} ${res?.why ?? ''}`);
    applyMs.push(swappedAt - t0);
    healthMs.push(res.health?.ms ?? NaN);
    while (!['c1', 'c2'].every((c) => turns.some((t) => t.conv === c && t.started > swappedAt))) await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await Promise.all(loops);
    for (const c of ['c1', 'c2']) firstAfterSwap.push(turns.find((t) => t.conv === c && t.started > swappedAt)!.ms);
    for (const t of turns) if (t.started < t0) steady.push(t.ms);
    const rel = (await svc.list(id)).find((r) => r.id === res.release);
    if (typeof rel?.outcome.swapMs === 'number') acquireOnNew.push(rel.outcome.swapMs);
    // Rollback to the kept slot, then the first turn on it.
    const back = await svc.rollback(id, { who: 'bench', why: 'bench' });
    rollbackSwap.push(back.ms);
    firstAfterRollback.push((await send(`echo rb-${round}`, 'c1')).ms);
    sent++;
    // Forward again (the manifest still names the new image) for the next round's base.
    const [fwd] = await svc.apply([id], { who: 'bench', why: 'forward' });
    if (fwd?.outcome !== 'swapped') throw new Error(`forward: ${fwd?.outcome} ${fwd?.why ?? ''}`);
    await send('echo fwd', 'c1');
  }
  // Rollback with the kept slot gone: re-created from the recorded digest.
  for (let i = 0; i < Math.min(2, rounds); i++) {
    const row = await svc.repo.slots(id);
    await ctx.driver.slot(row!.active === 'a' ? 'b' : 'a').discard(id);
    const back = await svc.rollback(id, { who: 'bench', why: 'recreate' });
    if (back.how !== 'recreated') throw new Error(`expected a re-created slot, got ${back.how}`);
    rollbackRecreate.push(back.ms);
    await send('echo after-recreate', 'c1');
    const [fwd] = await svc.apply([id], { who: 'bench', why: 'forward' });
    if (fwd?.outcome !== 'swapped') throw new Error(`forward: ${fwd?.outcome}`);
  }
  console.log(JSON.stringify({
    conditions: { runtime: 'runsc', store: ctx.store.kind, cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), rounds, conversations: 2, agent: 'reference (echo)', node: process.version },
    turnsSent: sent, turnsFailedOrLost: failed,
    steadyTurnMs: summary(steady), firstTurnAfterSwapMs: summary(firstAfterSwap), acquireOnNewSlotMs: summary(acquireOnNew),
    applyMs: summary(applyMs), healthMs: summary(healthMs),
    rollbackSwapMs: summary(rollbackSwap), firstTurnAfterRollbackMs: summary(firstAfterRollback), rollbackRecreateMs: summary(rollbackRecreate),
  }, null, 2));
} finally {
  await running.stop();
  await ctx.driver.destroy(id, { finalSnapshot: false }).catch(() => undefined);
  await ctx.close();
  for (const i of images) await run('docker', ['rmi', '-f', i]).catch(() => undefined);
}
