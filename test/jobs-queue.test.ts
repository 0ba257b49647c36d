/**
 * The job queue on Redis (BullMQ): two job runners sharing one Redis and one database (as two
 * gateway processes do) never run more than `jobs.maxConcurrent` of a profile's jobs at once
 * between them, and a job queued by one may be run by either.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createJobRunner, type JobRunner } from '../src/jobs/index.js';
import { createLogger } from '../src/log.js';
import type { SandboxDriver } from '../src/sandbox/types.js';
import { openStore, type Store } from '../src/store/index.js';
import { TEST_IMAGE } from './helpers/env.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { makeDriver } from './helpers/sandbox.js';

const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const logger = createLogger('silent');
let tdb: TestDatabase;
const stores: Store[] = [];
const drivers: SandboxDriver[] = [];
const runners: JobRunner[] = [];
let profile: Profile;

beforeAll(async () => {
  tdb = await createTestDatabase();
  const id = `jq-${randomBytes(3).toString('hex')}`;
  const v = validateProfile({
    version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L1', runtime: 'runsc', image: TEST_IMAGE,
    bindings: [{ platform: 'local', channels: ['*'] }],
    jobs: { enabled: true, maxConcurrent: 1, limits: { cpus: 1, memoryMiB: 128, pids: 128 } },
  }, `${id}.yaml`);
  if (!v.profile) throw new Error(JSON.stringify(v.issues));
  profile = v.profile;
  const prefix = `test-${randomBytes(6).toString('hex')}`;
  for (let i = 0; i < 2; i++) {
    const store = await openStore({ databaseUrl: tdb.url, dataDir: os.tmpdir() });
    await store.migrate();
    const driver = makeDriver();
    stores.push(store);
    drivers.push(driver);
    runners.push(createJobRunner({
      jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger,
      config: { image: TEST_IMAGE, runtime: 'runsc', outbox: { maxFileBytes: 1024 * 1024, maxTotalBytes: 4 * 1024 * 1024, maxFiles: 20 }, redisUrl },
      profiles: () => new Map([[profile.id, profile]]),
      queuePrefix: prefix,
    }));
  }
  for (const r of runners) await r.start();
}, 60_000);

afterAll(async () => {
  for (const r of runners) await r.close();
  for (const d of drivers) await d.close();
  for (const s of stores) await s.close();
  await tdb?.drop();
});

describe('jobs on Redis', () => {
  it('two runners on one Redis run at most maxConcurrent of a profile at once between them', async () => {
    const cmd = ['sh', '-c', 'date +%s%N; sleep 0.5; date +%s%N'];
    const results = await Promise.all([0, 1, 2, 3].map((i) => runners[i % 2]!.run({ profile: profile.id, requestedBy: `cli:r${i % 2}`, args: { command: cmd } })));
    expect(results.map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    const spans = results.map((r) => r.stdout.trim().split('\n').map((n) => BigInt(n))).sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
    // Each command started only after the one before it had ended.
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0]! >= spans[i - 1]![1]!, `job ${i} overlapped the one before`).toBe(true);
    for (const r of results) expect(r.teardown.verified).toBe(true);
  }, 120_000);
});
