/**
 * Lifecycle soak (issue 13 "Done when"): turns that each write one file into the agent's
 * workspace, with a random fault per turn, then a count of completed turns whose file is gone
 * (must be 0). Real Docker + runsc, PostgreSQL + Redis, the profile's unit in its own child
 * process (`agent-vm unit`, from source), a front door in this process. Faults:
 *
 *   unit       SIGKILL of the unit process mid-turn; a new unit process recovers the turn
 *   sandbox    `docker kill` of the sandbox mid-turn (the agent is restarted, the turn retried once)
 *   corrupt    the newest snapshot generation's archive overwritten in the middle
 *   snapshot   a process writing a generation into the agent's store is SIGKILLed half-way
 *
 * The profile sleeps after 4 s idle and snapshots every minute while busy, so sleeps, wakes and
 * restore checks happen between faults. A turn counts as completed when the person got its answer
 * (not a notice). Prints JSON: faults by kind, turns completed / noticed, lost files.
 *
 *   npm run bench:soak -- [--faults 200] [--seed 1]
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import type { TurnOutcome } from '../src/adapters/types.js';
import { manifest, profileId, replyText, startTestGateway } from '../test/helpers/gateway.js';
import { createTestDatabase } from '../test/helpers/pg.js';

const run = promisify(execFile);
const { values } = parseArgs({ options: { faults: { type: 'string', default: '200' }, seed: { type: 'string', default: '1' } } });
const FAULTS = Number(values.faults);
let seed = Number(values.seed) || 1;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const id = profileId('soak');
const kinds = ['unit', 'sandbox', 'corrupt', 'snapshot'] as const;
type Kind = (typeof kinds)[number];

const db = await createTestDatabase();
const front = await startTestGateway({
  manifests: [manifest(id, { idle: { pauseAfterSeconds: 3600, sleepAfterSeconds: 4 }, snapshot: { everyMinutes: 1 } })],
  env: { DATABASE_URL: db.url, REDIS_URL: redisUrl },
  units: 'none',
});
const store = front.ctx.snapshots as typeof front.ctx.snapshots & { localPath?(agentId: string, generation: number): string };

let unit: ChildProcess | undefined;
function startUnit(): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/helpers/cli-entry.ts'), 'unit', id], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: db.url, REDIS_URL: redisUrl, AGENTVM_PROFILES_DIR: front.profilesDir, AGENTVM_DATA_DIR: front.ctx.config.dataDir, AGENTVM_RUNTIME: 'runsc', AGENTVM_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  unit = child;
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes(`unit ${id} running`) && resolve());
    child.once('exit', (code) => reject(new Error(`unit exited with ${code}: ${err}`)));
  });
}
function kill9(c: ChildProcess | undefined): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    c.once('exit', () => r());
    c.kill('SIGKILL');
  });
}
async function until(what: string, fn: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
async function outcomeOf(eventId: string): Promise<TurnOutcome> {
  let out: TurnOutcome | undefined;
  for await (const o of front.running.gateway.watcher.watch(eventId)) if (o.kind !== 'progress') out = o;
  return out!;
}

/** The newest generation's archive, overwritten in its middle (a bad disk, a torn upload). */
async function corruptNewest(): Promise<boolean> {
  const [newest] = await store.list(id);
  if (!newest || !store.localPath) return false;
  const file = store.localPath(id, newest.generation);
  const st = await fs.stat(file).catch(() => undefined);
  if (!st) return false;
  const fh = await fs.open(file, 'r+');
  await fh.write(Buffer.alloc(Math.min(4096, st.size), 0x5a), 0, undefined, Math.floor(st.size / 2));
  await fh.close();
  return true;
}

/** A writer of one generation into this agent's store, killed half-way. */
async function killMidSnapshot(): Promise<void> {
  const opts = JSON.stringify({ kind: 'local', dir: path.join(front.ctx.config.dataDir, 'snapshots') });
  const w = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/helpers/snapshot-writer.ts'), opts, id, String(1 << 20)], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((r) => w.stdout!.on('data', (d: Buffer) => d.toString().includes('writing') && r()));
  await kill9(w);
}

const faults: Record<Kind, number> = { unit: 0, sandbox: 0, corrupt: 0, snapshot: 0 };
const completed: number[] = [];
const noticed: Array<{ n: number; text: string }> = [];
const started = Date.now();
try {
  await startUnit();
  for (let n = 0; n < FAULTS; n++) {
    const kind = kinds[Math.floor(rand() * kinds.length)]!;
    // Each turn writes its own file at the workspace root (from the conversation's directory), slowly enough to be hit.
    const text = `sh mkdir -p ../../soak && echo ${n} > ../../soak/f${n} && sleep 1 && echo wrote ${n}`;
    const event = localEvent(localMessageSchema.parse({ profile: id, text, conversation: `c${n % 3}` }), 'soak');
    if ((await front.running.gateway.intake.accept(event)).status !== 'accepted') throw new Error('not accepted');
    const outcome = outcomeOf(event.id);
    if (kind === 'unit' || kind === 'sandbox') {
      await until('the turn to run', async () => (await front.ctx.store.gateway.getEvent(event.id))?.status !== 'queued');
      await new Promise((r) => setTimeout(r, 300 + rand() * 700));
      if (kind === 'unit') {
        await kill9(unit);
        await startUnit();
      } else await run('docker', ['kill', `agentvm-${id}`]).catch(() => undefined); // may be between wakes: then nothing to kill
    } else if (kind === 'corrupt') {
      if (!(await corruptNewest())) await killMidSnapshot();
    } else await killMidSnapshot();
    faults[kind]++;
    const o = await outcome;
    if (o.kind === 'notice') noticed.push({ n, text: o.text.slice(0, 200) });
    else if (replyText(o).includes(`wrote ${n}`)) completed.push(n);
    else noticed.push({ n, text: replyText(o).slice(0, 200) });
    // Now and then, let the idle sleep (snapshot + stop) happen so the next turn wakes from it.
    if (rand() < 0.15) await new Promise((r) => setTimeout(r, 6000));
  }
  // A shell glob, not ls: Debian 12's runsc refuses coreutils' statx (README, sandbox hardening).
  const list = await front.send({ profile: id, text: 'sh cd ../../soak && for f in f*; do echo $f; done', conversation: 'check' });
  const present = new Set(replyText(list.outcome).split('\n').filter((l) => /^f\d+$/.test(l)));
  const lost = completed.filter((n) => !present.has(`f${n}`));
  console.log(
    JSON.stringify(
      {
        bench: 'lifecycle-soak',
        conditions: { runtime: 'runsc', backend: 'postgres+redis, unit in a child process', cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), seconds: Math.round((Date.now() - started) / 1000) },
        faults,
        turns: { completed: completed.length, noticed: noticed.length },
        notices: noticed.slice(0, 10),
        lostFiles: lost.length,
        lost,
        ...(lost.length > 0 ? { listing: replyText(list.outcome).slice(0, 2000) } : {}),
        generations: (await store.list(id)).length,
      },
      null,
      2,
    ),
  );
  if (lost.length > 0) process.exitCode = 1;
} finally {
  await kill9(unit);
  await front.close();
  await db.drop();
}
