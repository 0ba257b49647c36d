/**
 * One "gateway process" for test/schedules.test.ts: a scheduler on Redis and PostgreSQL with an
 * intake that stores each event delivered at once. Prints one JSON line per tick it is handed,
 * with whether its database claim won, so the parent can tell which process ran which tick.
 * argv: <database url> <redis url> <prefix> <profile manifest json> <seconds to run>
 */
import type { InboundEvent } from '../../src/adapters/types.js';
import { createAuditLog } from '../../src/governance/audit.js';
import { validateProfile } from '../../src/governance/profile.js';
import { createLocalAdapter } from '../../src/adapters/local/index.js';
import { createLogger } from '../../src/log.js';
import { createScheduler } from '../../src/schedules/index.js';
import { openStore } from '../../src/store/index.js';

const [databaseUrl, redisUrl, prefix, manifest, seconds] = process.argv.slice(2) as [string, string, string, string, string];
const logger = createLogger('silent');
const store = await openStore({ databaseUrl, dataDir: '/nonexistent' });
const v = validateProfile(JSON.parse(manifest), 'p.yaml');
if (!v.profile) throw new Error(JSON.stringify(v.issues));
const profile = v.profile;
const intake = {
  async accept(e: InboundEvent) {
    await store.gateway.insertEvent({ id: e.id, platform: e.platform, profile: profile.id, conversation: e.conversation, status: 'queued', payload: e });
    await store.gateway.setStatus(e.id, 'failed', 'test: no agent');
    process.stdout.write(`${JSON.stringify({ accepted: e.id, pid: process.pid })}\n`);
    return { status: 'accepted' as const, profile: profile.id };
  },
};
const runs = store.scheduleRuns;
const counted = {
  ...runs,
  async claim(r: Parameters<typeof runs.claim>[0]) {
    const won = await runs.claim(r);
    process.stdout.write(`${JSON.stringify({ tick: r.tick.toISOString(), pid: process.pid, won })}\n`);
    return won;
  },
};
const scheduler = createScheduler({
  profiles: () => new Map([[profile.id, profile]]),
  intake,
  route: () => ({ ok: true, profile: { id: profile.id } }),
  adapters: new Map([['local', createLocalAdapter({ intake, watcher: { watch: async function* () {} }, logger })]]),
  store: { scheduleRuns: counted, events: store.gateway },
  audit: createAuditLog(store.audit),
  logger,
  redisUrl,
  prefix,
});
await scheduler.start();
process.stdout.write(`${JSON.stringify({ started: process.pid })}\n`);
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
await scheduler.close();
await store.close();
process.stdout.write(`${JSON.stringify({ done: process.pid })}\n`);
