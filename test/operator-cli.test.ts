/**
 * The CLI's `--server` mode against a running gateway (fake sandbox driver, embedded database held
 * by the server, as with `agent-vm up`): approvals, tool pins, transcripts and the audit trail
 * through the operator API, printed as the local commands print them; a wrong token is one clear
 * line and exit 2.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import type { FakeDriver } from '../src/sandbox/fake.js';
import { openStore, type Store } from '../src/store/index.js';
import { REFERENCE_AGENT_HOST_BUNDLE, makeFakeDriver } from './helpers/fake.js';
import { tempDir, testConfig } from './helpers/env.js';
import { manifest, writeProfiles } from './helpers/gateway.js';

const ENTRY = fileURLToPath(new URL('./helpers/cli-entry.ts', import.meta.url));
const ADMIN = 'cli-admin-token-0123456789';
const P = 'cli-remote';
let store: Store;
let driver: FakeDriver;
let running: Running;
let server: ServerType;
let url = '';

function cli(args: string[], token = ADMIN): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, ...args], {
      env: { PATH: process.env.PATH, AGENTVM_DATA_DIR: tempDir('cli-remote'), AGENTVM_ADMIN_TOKEN: token, AGENTVM_LOG_LEVEL: 'silent' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  const profilesDir = tempDir('profiles');
  const dataDir = tempDir('data');
  await writeProfiles(profilesDir, [manifest(P)]);
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir, AGENTVM_ADMIN_TOKEN: ADMIN });
  store = await openStore({ dataDir });
  await store.migrate();
  driver = makeFakeDriver();
  // The fake driver keeps its own snapshots: the context's snapshot store (when it has one) is not used.
  const ctx = { config, logger: createLogger('silent'), store, driver, close: async () => undefined } as Omit<Context, 'snapshots'> as Context;
  running = await startGatewayApp(ctx, { units: 'all' });
  server = serve({ fetch: running.app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => server.once('listening', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const e = localEvent(localMessageSchema.parse({ profile: P, text: 'echo line one\nfile: forged.txt (1 bytes)', conversation: 'remote' }), 'test');
  await running.gateway.intake.accept(e);
  for await (const o of running.gateway.watcher.watch(e.id)) void o;
}, 120_000);

afterAll(async () => {
  server?.close();
  await running?.stop();
  await driver?.close();
  await store?.close();
});

describe('agent-vm --server (operator API)', () => {
  it('lists and answers approvals', async () => {
    expect(await cli(['approvals', 'ls', '--server', url])).toMatchObject({ code: 0, stdout: 'no pending approvals\n' });
    const id = randomUUID();
    await store.approvals.insert({ id, profile: P, sessionKey: 's', eventId: null, tool: 'srv.add', argsHash: 'h', approvers: [], requestedAt: new Date(), expiresAt: new Date(Date.now() + 60_000) });
    const ls = await cli(['approvals', 'ls', '--server', url]);
    expect(ls.stdout).toMatch(new RegExp(`^ID\\tPROFILE\\tTOOL\\tEXPIRES IN\\tAPPROVERS\\n${id}\\t${P}\\tsrv.add\\t\\d+ s\\t\\(operator only\\)\\n$`));
    expect(await cli(['approvals', 'approve', id, '--server', url])).toMatchObject({ code: 0, stdout: `${id}: approved\n` });
    const again = await cli(['approvals', 'deny', id, '--server', url]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/no pending approval .* see agent-vm approvals ls/);
    expect((await store.approvals.get(id))).toMatchObject({ status: 'approved', answeredBy: 'local:api' });
  });

  it('shows pins with the diff and re-pins through the server', async () => {
    await store.pins.pinIfAbsent(P, 'srv.echo', 'a'.repeat(64), { name: 'echo', description: 'old' });
    await store.pins.noteSeen(P, 'srv.echo', 'b'.repeat(64), { name: 'echo', description: 'new\u001b[2J' });
    const pins = await cli(['tools', 'pins', P, '--server', url]);
    expect(pins.code).toBe(0);
    expect(pins.stdout).toContain(`${P}\tsrv.echo\tquarantined\taaaaaaaaaaaa`);
    expect(pins.stdout).toContain('+   "description": "new\\u001b[2J",');
    expect(pins.stdout).not.toContain('\u001b');
    const repin = await cli(['tools', 'repin', P, 'srv.echo', '--expect', 'b'.repeat(64), '--server', url]);
    expect(repin).toMatchObject({ code: 0, stdout: `${P} srv.echo: re-pinned to bbbbbbbbbbbb\n` });
    const none = await cli(['tools', 'repin', P, 'srv.echo', '--server', url]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/nothing to re-pin for srv\.echo .*has not changed/);
  });

  it('prints a transcript and the audit trail, and verifies the chain', async () => {
    const t = await cli(['transcript', `local:${P}:remote`, '--server', url]);
    expect(t.code).toBe(0);
    const lines = t.stdout.split('\n');
    expect(lines[0]).toMatch(/^\S+Z {2}prompt {4}echo line one$/);
    // The agent's second line cannot pose as a line of the CLI's own.
    expect(lines[1]).toMatch(/^ {36}file: forged\.txt \(1 bytes\)$/);
    expect(t.stdout).toMatch(/ {2}reply {5}line one/);
    const tail = await cli(['audit', 'tail', '-n', '3', '--server', url]);
    expect(tail.code).toBe(0);
    const rows = tail.stdout.trim().split('\n').map((l) => l.split('\t'));
    expect(rows).toHaveLength(3);
    expect(rows.map((r) => Number(r[0]))).toEqual([...rows.map((r) => Number(r[0]))].sort((a, b) => a - b));
    expect(await cli(['audit', 'verify', '--server', url])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^audit trail intact: \d+ rows\n$/) });
    const missing = await cli(['transcript', 'local:nobody:x', '--server', url]);
    expect(missing.code).toBe(2);
  });

  it('lists, sleeps, wakes and snapshots agents through the server', async () => {
    const ls = await cli(['agents', 'ls', '--server', url]);
    expect(ls).toMatchObject({ code: 0, stderr: '' });
    expect(ls.stdout).toMatch(new RegExp(`^AGENT\tSANDBOX\tRUNTIME\tRECORDED\tLAST WAKE\n${P}\trunning\trunsc\trunning\t\\d+ ms\n$`));
    expect(await cli(['agents', 'sleep', P, '--server', url])).toMatchObject({ code: 0, stdout: `${P}: sleep done (asleep)\n` });
    expect((await store.agents.get(P))!.state).toBe('sleeping');
    expect(await cli(['agents', 'wake', P, '--server', url])).toMatchObject({ code: 0, stdout: `${P}: wake done (awake)\n` });
    expect((await store.agents.get(P))!.state).toBe('running');
    const snap = await cli(['agents', 'snapshot', P, '--server', url]);
    expect(snap.stdout).toMatch(new RegExp(`^${P}: snapshot done \\(generation \\d+, \\d+ bytes\\)\n$`));
    const nobody = await cli(['agents', 'wake', 'nobody', '--server', url]);
    expect(nobody).toMatchObject({ code: 2, stderr: 'agent-vm: error: no profile "nobody" is served by this gateway\n' });
  });

  it('a wrong token is one clear line and exit 2', async () => {
    const r = await cli(['approvals', 'ls', '--server', url], 'wrong-token-0123456789abc');
    expect(r).toMatchObject({ code: 2, stdout: '', stderr: 'agent-vm: error: missing or wrong bearer token\n' });
  });
});
