/**
 * The database goes away under a running `agent-vm up` (PostgreSQL + Redis): connections are
 * dropped (as pg_terminate_backend or a network blip would), or refused for a while. Nothing is
 * misreported, nobody gets a generic 500, the profile is never served twice, and a shutdown
 * after it all is clean. The database sits behind a TCP proxy the test controls, so the server
 * other tests share is never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { manifest, profileId, writeProfiles } from './helpers/gateway.js';
import { tempDir } from './helpers/env.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { makeDriver } from './helpers/sandbox.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { until } from './helpers/wait.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const TOKEN = 'db-faults-token-0123456789';
const p = profileId('dbf');

let db: TestDatabase;
let proxy: TcpProxy;
let proxiedUrl: string;
let up: ChildProcess;
let upOutput = '';
let base: string;
const profilesDir = tempDir('profiles');
const dataDir = tempDir('data');
const children = new Set<ChildProcess>();

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function agentVm(args: string[], env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [path.join(root, 'bin/agent-vm.js'), ...args], {
    env: { ...process.env, AGENTVM_PROFILES_DIR: profilesDir, AGENTVM_DATA_DIR: dataDir, AGENTVM_RUNTIME: 'runsc', REDIS_URL: redisUrl, AGENTVM_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  return child;
}

function message(text: string, conversation: string) {
  return fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ profile: p, text, conversation }),
  });
}

/** Events of the profile not yet at rest (queued, running, or replied but not delivered). */
async function openEvents(): Promise<number> {
  const admin = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await admin<Array<{ n: number }>>`select count(*)::int as n from events where profile = ${p} and status in ('queued', 'running', 'replied')`;
    return row?.n ?? 0;
  } finally {
    await admin.end({ timeout: 5 });
  }
}

async function terminateBackends(): Promise<number> {
  const admin = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    const rows = await admin<Array<{ ok: boolean }>>`select pg_terminate_backend(pid) as ok from pg_stat_activity where datname = current_database() and application_name = 'agent-vm' and pid <> pg_backend_pid()`;
    return rows.length;
  } finally {
    await admin.end({ timeout: 5 });
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = await startTcpProxy({ host: '127.0.0.1', port: 5432 });
  const u = new URL(db.url);
  u.port = String(proxy.port);
  proxiedUrl = u.toString();
  await writeProfiles(profilesDir, [manifest(p)]);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  // Debug: a failure prints the end of this log (afterEach), and it should say where a turn waited.
  up = agentVm(['up'], { DATABASE_URL: proxiedUrl, AGENTVM_API_TOKEN: TOKEN, AGENTVM_PORT: String(port), AGENTVM_LOG_LEVEL: 'debug' });
  up.stdout!.on('data', (d: Buffer) => (upOutput += d.toString()));
  up.stderr!.on('data', (d: Buffer) => (upOutput += d.toString()));
  await until('agent-vm up to listen', () => (upOutput.includes('agent-vm listening') ? true : undefined), { timeoutMs: 60_000 });
  // A first turn wakes the agent, so later turns measure the faults, not the wake.
  const first = await message('echo ready', 'warm');
  expect(first.status).toBe(200);
}, 120_000);

// A failure here is about the gateway's side: show what it logged (the end of it).
afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(`agent-vm up (exit ${up?.exitCode ?? up?.signalCode ?? 'running'}) logged, last 12000 characters:\n${upOutput.slice(-12000)}`);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all([...children].map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  // The gateway leaves its agent's sandbox asleep (or awake, when it was killed): remove it.
  const driver = makeDriver();
  await driver.destroy(p).catch(() => undefined);
  await driver.close();
  await proxy?.close();
  await db?.drop();
});

describe('the database drops out under a running gateway', () => {
  it('a connection drop mid-turn never misreports the turn: each waiting request gets its reply', async () => {
    for (let i = 0; i < 3; i++) {
      const pending = message('slow 1500', `drop-${i}`);
      await new Promise((r) => setTimeout(r, 600));
      proxy.dropAll();
      const res = await pending;
      const body = (await res.json()) as { type?: string; text?: string; error?: string };
      expect({ status: res.status, type: body.type, text: body.text }).toEqual({ status: 200, type: 'reply', text: 'slept 1500' });
    }
    // A drop can land while a reply is being delivered: it is delivered again, and every turn ends.
    await until('every turn to end delivered', async () => (await openEvents()) === 0 || undefined, { timeoutMs: 45_000 });
  }, 120_000);

  it('while the database is unreachable, a request gets 503 with Retry-After naming the database, and /readyz says why', async () => {
    proxy.block();
    proxy.dropAll();
    try {
      const res = await message('echo nobody', 'gone');
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toBe('database_unavailable');
      expect(body.message).toMatch(/database is unavailable/);
      const ready = await fetch(`${base}/readyz`);
      expect(ready.status).toBe(503);
      expect(JSON.stringify(await ready.json())).toMatch(/"name":"database","ok":false/);
    } finally {
      proxy.unblock();
    }
    const back = await message('echo back', 'gone');
    expect(((await back.json()) as { text: string }).text).toBe('back');
  }, 60_000);

  it('a unit whose backends were terminated keeps its profile: a second unit waits instead of serving too', async () => {
    expect(await terminateBackends()).toBeGreaterThan(0);
    const second = agentVm(['unit', p], { DATABASE_URL: db.url });
    let out = '';
    second.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    second.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await until('the second unit to wait', () => (out.includes('another unit serves this profile; waiting') ? true : undefined), { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 4000)); // past several renewals of the first unit's lease
    expect(out).not.toContain(`unit ${p} running`);
    const res = await message('echo still here', 'after-terminate');
    expect(((await res.json()) as { text: string }).text).toBe('still here');
    expect(out).not.toContain(`unit ${p} running`);
    second.kill('SIGTERM');
    await new Promise((r) => second.once('exit', r));
  }, 90_000);

  it('SIGTERM after a connection drop exits 0, cleanly', async () => {
    await terminateBackends();
    proxy.dropAll();
    const code = await new Promise<number | null>((resolve) => {
      up.once('exit', (c) => resolve(c));
      up.kill('SIGTERM');
    });
    expect(upOutput).not.toMatch(/TypeError|uncaught/i);
    expect(code).toBe(0);
  }, 60_000);
});
