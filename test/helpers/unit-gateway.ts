/**
 * A real gateway (router, intake, queue, units, turns, watcher) on the embedded database, with the
 * fake sandbox driver: the reference agent runs as a child process of the test. For gateway logic
 * (timeouts, hang-ups, shutdown, outbox, recovery, leases) in milliseconds, without Docker.
 */
import { afterEach } from 'vitest';
import { localEvent, type LocalMessage, localMessageSchema } from '../../src/adapters/local/index.js';
import type { TurnOutcome } from '../../src/adapters/types.js';
import { startGatewayApp, type Running } from '../../src/app.js';
import type { Context } from '../../src/context.js';
import type { TurnPolicy } from '../../src/gateway/index.js';
import type { UnitOptions } from '../../src/gateway/unit.js';
import { createLogger } from '../../src/log.js';
import type { FakeDriver } from '../../src/sandbox/fake.js';
import { openStore, type Store } from '../../src/store/index.js';
import { tempDir, testConfig } from './env.js';
import { makeFakeDriver } from './fake.js';
import { writeProfiles } from './gateway.js';
import { seedFromTemplate } from './pglite-template.js';

export interface FakeGateway {
  ctx: Context;
  driver: FakeDriver;
  running: Running;
  store: Store;
  send(m: LocalMessage): Promise<{ eventId: string; conversation: string; progress: string[]; outcome: TurnOutcome }>;
  /** Accepts without waiting; returns the event id. */
  post(m: LocalMessage): Promise<{ eventId: string; conversation: string }>;
  outcome(eventId: string): Promise<TurnOutcome>;
  /** Stops the gateway (units, adapters); the store and driver stay for a successor. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

export interface FakeGatewayOptions {
  manifests: Array<Record<string, unknown>>;
  env?: Record<string, string>;
  policy?: Partial<TurnPolicy>;
  unit?: Pick<UnitOptions, 'maxAttempts' | 'lockWaitMs' | 'concurrency' | 'stopGraceMs' | 'leaseTtlMs' | 'initTimeoutMs' | 'keepAwake' | 'sweepMs'>;
  /** Reuse a store and driver (a restarted gateway); default: fresh ones. */
  reuse?: { store: Store; driver: FakeDriver; dataDir: string; profilesDir: string };
}

export async function startFakeGateway(o: FakeGatewayOptions): Promise<FakeGateway & { dataDir: string; profilesDir: string }> {
  const profilesDir = o.reuse?.profilesDir ?? tempDir('profiles');
  const dataDir = o.reuse?.dataDir ?? tempDir('data');
  if (!o.reuse) await writeProfiles(profilesDir, o.manifests);
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir, ...o.env });
  const logger = createLogger(process.env.TEST_LOG_LEVEL === 'debug' ? 'debug' : 'silent');
  if (!o.reuse) seedFromTemplate(dataDir);
  const store = o.reuse?.store ?? (await openStore({ dataDir }));
  if (!o.reuse) await store.migrate();
  const driver = o.reuse?.driver ?? makeFakeDriver();
  const ctx: Context = { config, logger, store, driver, snapshots: driver.snapshots, close: async () => undefined };
  const running = await startGatewayApp(ctx, { units: 'all', policy: o.policy, unit: o.unit });
  const outcome = async (eventId: string) => {
    let out: TurnOutcome | undefined;
    for await (const x of running.gateway.watcher.watch(eventId)) if (x.kind !== 'progress') out = x;
    return out!;
  };
  let stopped = false;
  return {
    ctx,
    driver,
    running,
    store,
    dataDir,
    profilesDir,
    async post(m) {
      const event = localEvent(localMessageSchema.parse(m), 'test');
      await running.gateway.intake.accept(event);
      return { eventId: event.id, conversation: event.conversation };
    },
    outcome,
    async send(m) {
      const event = localEvent(localMessageSchema.parse(m), 'test');
      const r = await running.gateway.intake.accept(event);
      if (r.status === 'rejected') return { eventId: event.id, conversation: event.conversation, progress: [], outcome: { kind: 'notice', text: r.message } };
      const progress: string[] = [];
      let out: TurnOutcome | undefined;
      for await (const x of running.gateway.watcher.watch(event.id)) {
        if (x.kind === 'progress') progress.push(x.text);
        else out = x;
      }
      return { eventId: event.id, conversation: event.conversation, progress, outcome: out! };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await running.stop();
    },
    async close() {
      if (!stopped) await running.stop();
      stopped = true;
      await driver.close();
      await store.close();
    },
  };
}

/**
 * A test file's fake gateways: each one `start`ed is closed after its test; `release` takes one
 * off that list (its store and driver handed to a successor that closes them).
 */
export function fakeGatewaysClosedAfterEach() {
  const open: FakeGateway[] = [];
  afterEach(async () => {
    for (const g of open.splice(0)) await g.close().catch(() => undefined);
  });
  return {
    async start(o: FakeGatewayOptions) {
      const g = await startFakeGateway(o);
      open.push(g);
      return g;
    },
    release(g: FakeGateway): void {
      const i = open.indexOf(g);
      if (i >= 0) open.splice(i, 1);
    },
  };
}
