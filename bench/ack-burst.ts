/**
 * Acknowledgements under a burst while turns run: bursts of signed Slack `app_mention` events
 * (100 at once by default) sent over real HTTP to `agent-vm`'s app (real Slack adapter, real
 * gateway intake, store and queue) while the profile's unit runs 8 turns at once. Each turn is the
 * reference agent's `slow 2000` run by the fake sandbox driver (a child process of this one, no
 * Docker), and every mention is itself such a turn, so the unit stays saturated for the whole run
 * and each turn's own queries and Slack calls (to a local fake of the Web API, in the load
 * generator's process, as Slack is elsewhere) compete with the acknowledgements. Baseline, same run: a burst of the same size against `GET /healthz` on the same
 * server right after each mention burst.
 *
 *   node --import tsx bench/ack-burst.ts -- [--store pglite|postgres] [--queue memory|redis]
 *                                           [--bursts 6] [--burst 100] [--turns 8] [--gap-ms 1500]
 *
 * Prints JSON: ack latency (time until the HTTP answer) p50/p95/p99/max over every burst, the
 * baseline, how many turns were running when each burst started, and the run's conditions.
 */
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { stringify } from 'yaml';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { signSlackRequest } from '../src/adapters/slack/index.js';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { platformAdapters, startGatewayApp } from '../src/app.js';
import type { Intake } from '../src/adapters/types.js';
import { loadConfig } from '../src/config.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import { createFakeDriver } from '../src/sandbox/fake.js';
import { createSnapshotStore } from '../src/sandbox/snapshots/index.js';
import { openStore } from '../src/store/index.js';
import { startFakeSlack } from '../test/fakes/slack-api.js';
import { REFERENCE_AGENT_HOST_BUNDLE, REFERENCE_AGENT_IN_IMAGE } from '../test/helpers/fake.js';
import { summary } from './stats.js';

const SECRET = 'bench-signing-secret';
const TEAM = 'TBURST';

function mentionBody(eventId: string, ts: string, botUserId: string, text: string): string {
  return JSON.stringify({
    token: 'x', team_id: TEAM, api_app_id: 'ABURST', type: 'event_callback', event_id: eventId, event_time: Math.floor(Date.now() / 1000),
    authorizations: [{ user_id: botUserId, is_bot: true }],
    event: { type: 'app_mention', user: 'UHUMAN', text: `<@${botUserId}> ${text}`, ts, channel: 'CBURST', team: TEAM },
  });
}

export async function runAckBurst(o: { store: 'pglite' | 'postgres'; queue: 'memory' | 'redis'; bursts: number; burst: number; turns: number; gapMs: number; turnMs: number }) {
  const root = path.join(os.tmpdir(), `agentvm-ackburst-${randomUUID().slice(0, 8)}`);
  const profilesDir = path.join(root, 'profiles');
  await mkdir(profilesDir, { recursive: true });
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  // The load generator is its own process, and so is the fake Slack API the adapter calls after
  // each ack (it lives in the load generator): neither runs on the server's event loop.
  const client = fork(fileURLToPath(import.meta.url), ['--client'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const slack = await new Promise<{ url: string; botToken: string; botUserId: string }>((resolve) => client.once('message', (m) => resolve(m as { url: string; botToken: string; botUserId: string })));
  await writeFile(
    path.join(profilesDir, 'burst.yaml'),
    stringify({
      version: 1, id: 'burst', name: 'Burst', agent: { command: ['node', REFERENCE_AGENT_IN_IMAGE] }, runtime: 'runsc',
      limits: { cpus: 1, memoryMiB: 256, pids: 128 }, risk: 'L1', turn: { timeoutSeconds: 120 },
      bindings: [{ platform: 'local', channels: ['*'] }, { platform: 'slack', team: TEAM }],
    }),
  );
  let db: { url: string; drop(): Promise<void> } | undefined;
  if (o.store === 'postgres') db = await (await import('../test/helpers/pg.js')).createTestDatabase();
  const config = loadConfig({
    ...process.env,
    AGENTVM_LOG_LEVEL: 'silent', AGENTVM_RUNTIME: 'runsc', AGENTVM_DATA_DIR: path.join(root, 'data'), AGENTVM_PROFILES_DIR: profilesDir,
    DATABASE_URL: db?.url ?? '', REDIS_URL: o.queue === 'redis' ? (process.env.REDIS_URL ?? 'redis://127.0.0.1:6379') : '',
    SLACK_SIGNING_SECRET: SECRET, SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url,
  });
  const logger = createLogger(process.env.BENCH_LOG_LEVEL === 'debug' ? 'debug' : 'silent');
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  await store.migrate();
  const driver = createFakeDriver({ root: path.join(root, 'fake'), outbox: config.outbox, programs: { [REFERENCE_AGENT_IN_IMAGE]: [REFERENCE_AGENT_HOST_BUNDLE] } });
  const ctx: Context = { config, logger, store, driver, snapshots: createSnapshotStore(config.snapshots, config.dataDir), close: async () => undefined };
  // Server side: how long intake.accept takes (store + queue), apart from HTTP and the client.
  const intakeMs: number[] = [];
  const timed = (intake: Intake): Intake => ({
    ...intake,
    async accept(e) {
      const t = performance.now();
      try {
        return await intake.accept(e);
      } finally {
        if (e.platform === 'slack') intakeMs.push(performance.now() - t);
      }
    },
  });
  const running = await startGatewayApp(ctx, { units: 'all', adapters: (c, deps) => platformAdapters(c, { ...deps, intake: timed(deps.intake) }) });
  // Server side: from the app getting the request to its answer (without the socket's queue).
  const handlerMs: number[] = [];
  // From the client's send (its wall clock, same machine) to the app getting the request: the wait before the handler.
  const beforeHandlerMs: number[] = [];
  const loop = monitorEventLoopDelay({ resolution: 5 });
  const server = serve({
    // The Node request goes on to the app as `agent-vm up` passes it (the body is read from it
    // directly, not through a Web stream).
    fetch: async (req: Request, env: unknown) => {
      const t = performance.now();
      const sentAt = Number(req.headers.get('x-bench-sent-at'));
      const res = await running.app.fetch(req, env);
      if (new URL(req.url).pathname === '/slack/events') {
        handlerMs.push(performance.now() - t);
        if (sentAt > 0) beforeHandlerMs.push(performance.timeOrigin + t - sentAt);
      }
      return res;
    },
    port: 0,
    hostname: '127.0.0.1',
  });
  await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  // Turns running: counted from the store's point of view (events in `running`).
  let runningTurns = 0;
  const unit = running.gateway.units.get('burst')!;
  const countRunning = async () => {
    const open = await store.gateway.openEvents('burst');
    runningTurns = open.filter((e) => e.status === 'running').length;
  };

  // Keep the unit busy before the first burst: `turns` local conversations.
  for (let i = 0; i < o.turns; i++) {
    await running.gateway.intake.accept(localEvent(localMessageSchema.parse({ profile: 'burst', text: `slow ${o.turnMs}`, conversation: `warm-${i}` }), 'bench'));
  }
  const t0 = Date.now();
  while (Date.now() - t0 < 15_000) {
    await countRunning();
    if (runningTurns >= o.turns) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  const acks: number[] = [];
  const baseline: number[] = [];
  const turnsAtBurst: number[] = [];
  let non2xx = 0;
  const ask = (m: ClientCommand) =>
    new Promise<ClientAnswer>((resolve) => {
      client.once('message', (a) => resolve(a as ClientAnswer));
      client.send(m);
    });
  const send = async (n: number) => (await ask({ kind: 'slack', base, n, botUserId: slack.botUserId, text: `slow ${o.turnMs}` }));
  const probe = async (n: number) => (await ask({ kind: 'healthz', base, n }));

  loop.enable();
  for (let b = 0; b < o.bursts; b++) {
    await countRunning();
    turnsAtBurst.push(runningTurns);
    const a = await send(o.burst);
    acks.push(...a.ms);
    non2xx += a.non2xx;
    baseline.push(...(await probe(o.burst)).ms);
    await new Promise((r) => setTimeout(r, o.gapMs));
  }

  loop.disable();
  client.kill();
  server.close();
  await running.stop();
  await driver.close();
  await store.close();
  await db?.drop();
  await rm(root, { recursive: true, force: true });
  void unit;
  const ack = summary(acks);
  return {
    bench: 'ack-burst',
    what: 'time from sending a signed Slack app_mention over HTTP until its answer (stored, then acknowledged), in bursts sent all at once, while the unit runs turns',
    conditions: {
      store: o.store,
      queue: o.queue,
      turns: `reference agent "slow ${o.turnMs}" on the fake sandbox driver (child processes, no Docker), unit concurrency 8; every mention is such a turn too`,
      turnsRunningAtEachBurst: turnsAtBurst,
      bursts: o.bursts,
      burstSize: o.burst,
      gapMs: o.gapMs,
      cpus: os.cpus().length,
      loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
      node: process.version,
    },
    ackMs: ack,
    intakeAcceptMs: summary(intakeMs),
    handlerMs: summary(handlerMs),
    beforeHandlerMs: summary(beforeHandlerMs),
    eventLoopDelayMs: { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
    baselineHealthzMs: summary(baseline),
    non2xx,
    target: { p99AckMs: 300 },
    meetsTarget: ack.p99 < 300 && non2xx === 0,
  };
}

type ClientCommand = { kind: 'slack'; base: string; n: number; botUserId: string; text: string } | { kind: 'healthz'; base: string; n: number };
type ClientAnswer = { ms: number[]; non2xx: number };

/** The load generator's side (and the fake Slack API's): one burst per command, all requests at once. */
async function runClient(): Promise<void> {
  const fake = await startFakeSlack();
  process.send!({ url: fake.url, botToken: fake.botToken, botUserId: fake.botUserId });
  let seq = 0;
  process.on('message', (m: ClientCommand) => {
    void (async () => {
      let non2xx = 0;
      const one = async (): Promise<number> => {
        let res: Response;
        const started = performance.now();
        if (m.kind === 'healthz') {
          res = await fetch(`${m.base}/healthz`);
        } else {
          const n = ++seq;
          const body = mentionBody(`EvB${process.pid}x${n}`, `1700000000.${String(n).padStart(6, '0')}`, m.botUserId, m.text);
          const stamp = String(Math.floor(Date.now() / 1000));
          res = await fetch(`${m.base}/slack/events`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signSlackRequest(SECRET, stamp, body), 'x-bench-sent-at': String(performance.timeOrigin + performance.now()) },
            body,
          });
        }
        const ms = performance.now() - started;
        await res.arrayBuffer();
        if (res.status >= 300) non2xx++;
        return ms;
      };
      const ms = await Promise.all(Array.from({ length: m.n }, one));
      process.send!({ ms, non2xx } satisfies ClientAnswer);
    })();
  });
}

if (process.argv.includes('--client')) {
  await runClient();
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((a) => a !== '--'),
    options: {
      store: { type: 'string', default: 'pglite' },
      queue: { type: 'string', default: 'memory' },
      bursts: { type: 'string', default: '6' },
      burst: { type: 'string', default: '100' },
      turns: { type: 'string', default: '8' },
      'gap-ms': { type: 'string', default: '1500' },
      'turn-ms': { type: 'string', default: '2000' },
    },
  });
  const result = await runAckBurst({
    store: values.store as 'pglite' | 'postgres',
    queue: values.queue as 'memory' | 'redis',
    bursts: Number(values.bursts),
    burst: Number(values.burst),
    turns: Number(values.turns),
    gapMs: Number(values['gap-ms']),
    turnMs: Number(values['turn-ms']),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(0);
}
