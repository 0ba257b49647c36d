/**
 * A job's only way out is its own egress relay, open to exactly `jobs.egress.allow`; its network
 * and firewall chain go with its teardown (the Docker driver's destroy checks the chain is gone,
 * also when a retried destroy finds the network removed already).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createJobRunner, jobSandboxId, type JobRunner } from '../src/jobs/index.js';
import { createLogger } from '../src/log.js';
import { bridgeName, chainFor } from '../src/sandbox/docker/firewall.js';
import type { SandboxDriver } from '../src/sandbox/types.js';
import { openStore, type Store } from '../src/store/index.js';
import { TEST_IMAGE, agentId } from './helpers/env.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { makeDriver } from './helpers/sandbox.js';

const run = promisify(execFile);
const logger = createLogger('silent');
let tdb: TestDatabase;
let store: Store;
let driver: SandboxDriver;
let runner: JobRunner;
let profile: Profile;
let server: http.Server;
let target: string;
let hits = 0;

/** An address of this host that is neither loopback nor link-local: what the relay may reach. */
function hostAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('169.254.')) return a.address;
  }
  throw new Error('this host has no non-loopback IPv4 address for the egress test');
}

beforeAll(async () => {
  server = http.createServer((_req, res) => {
    hits++;
    res.end('reached');
  });
  await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
  target = `${hostAddress()}:${(server.address() as AddressInfo).port}`;
  tdb = await createTestDatabase();
  store = await openStore({ databaseUrl: tdb.url, dataDir: os.tmpdir() });
  await store.migrate();
  driver = makeDriver();
  const id = `je-${randomBytes(3).toString('hex')}`;
  const v = validateProfile({
    version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L1', runtime: 'runsc', image: TEST_IMAGE,
    bindings: [{ platform: 'local', channels: ['*'] }],
    egress: { allow: [target, 'example.com:443'] },
    jobs: { enabled: true, egress: { allow: [target] } },
  }, `${id}.yaml`);
  if (!v.profile) throw new Error(JSON.stringify(v.issues));
  profile = v.profile;
  runner = createJobRunner({
    jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger,
    config: { image: TEST_IMAGE, runtime: 'runsc', outbox: { maxFileBytes: 1024 * 1024, maxTotalBytes: 8 * 1024 * 1024, maxFiles: 50 } },
    profiles: () => new Map([[profile.id, profile]]),
  });
}, 60_000);

afterAll(async () => {
  await runner?.close();
  await driver?.close();
  await store?.close();
  await tdb?.drop();
  server?.close();
});

const chainExists = async (bridge: string) => run('iptables', ['-w', '5', '-S', chainFor(bridge)]).then(() => true, () => false);

describe('job egress', () => {
  it('reaches only the targets jobs.egress.allow lists, only through its relay; the network and its firewall chain are torn down', async () => {
    const [host, port] = target.split(':') as [string, string];
    const probe = `
      const net = require('node:net');
      const proxy = new URL(process.env.HTTP_PROXY);
      const viaRelay = (t) => new Promise((res) => { const s = net.connect(Number(proxy.port), proxy.hostname, () => s.write('CONNECT ' + t + ' HTTP/1.1\\r\\nHost: ' + t + '\\r\\n\\r\\n'));
        s.once('data', (d) => { const line = d.toString().split('\\r\\n')[0]; if (!line.includes(' 200 ')) { s.destroy(); return res(line); }
          s.write('GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'); let body = ''; s.on('data', (x) => (body += x)); s.on('end', () => res(line + ' / ' + body.split('\\r\\n\\r\\n')[1])); });
        s.on('error', (e) => res('error ' + e.code)); });
      const direct = (h, p) => new Promise((res) => { const s = net.connect({ host: h, port: p, timeout: 3000 }); s.on('connect', () => { s.destroy(); res('OPEN'); }); s.on('error', (e) => res('blocked ' + e.code)); s.on('timeout', () => { s.destroy(); res('blocked timeout'); }); });
      (async () => {
        console.log(await viaRelay('${target}'));
        console.log(await viaRelay('example.com:443'));
        console.log(await direct('${host}', ${port}));
      })();`;
    const r = await runner.run({ profile: profile.id, requestedBy: 'cli:test', args: { command: ['node', '-e', probe], timeoutSeconds: 60 } });
    expect(r.status).toBe('succeeded');
    const [allowed, denied, direct] = r.stdout.trim().split('\n');
    expect(allowed).toBe('HTTP/1.1 200 Connection Established / reached');
    // In the profile's list, not in the job's: refused.
    expect(denied).toMatch(/^HTTP\/1\.1 403/);
    expect(direct).toMatch(/^blocked/);
    expect(hits).toBe(1);
    const rows = (await store.audit.tail(50)).filter((a) => a.action === 'egress.connect' && (a.data as { job?: string } | null)?.job === r.id);
    expect(rows.map((a) => a.decision).sort()).toEqual(['allow', 'deny']);
    expect(r.teardown.verified).toBe(true);
    expect(await chainExists(bridgeName('agentvm', jobSandboxId(r.id)))).toBe(false);
    expect((await run('docker', ['network', 'ls', '-q', '--filter', `label=agent-vm.agent=${jobSandboxId(r.id)}`])).stdout.trim()).toBe('');
  });

  it('a destroy retried after the network is gone still removes the firewall chain, and checks it', async () => {
    const id = agentId('chain');
    await driver.ensure({ agentId: id, image: TEST_IMAGE, runtime: 'runsc', limits: { cpus: 1, memoryMiB: 256, pids: 128 }, network: { mode: 'internal', hostPorts: [], proxyPort: 3128 } });
    const bridge = bridgeName('agentvm', id);
    expect(await chainExists(bridge)).toBe(true);
    // A first destroy that died after removing the container and the network, before the chain.
    await run('docker', ['rm', '-f', `agentvm-${id}`]);
    await run('docker', ['network', 'rm', `agentvm-${id}-net`]);
    expect(await chainExists(bridge)).toBe(true);
    await driver.destroy(id);
    expect(await chainExists(bridge)).toBe(false);
  });
});
