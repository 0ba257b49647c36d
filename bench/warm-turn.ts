/**
 * Warm turn overhead: what the gateway adds to one `echo` turn with the agent's sandbox awake
 * and its ACP connection up, against the baseline of the same prompt sent over a bare
 * `driver.attach()` to an identically specified second sandbox running the same reference agent.
 * One process, same runtime, A/B interleaved (alternating which goes first), so machine noise
 * hits both alike. Prints JSON.
 *
 *   node --import tsx bench/warm-turn.ts [--iterations 200] [--warmup 10]
 *
 * Instrumentation (a few performance.now() calls per turn, no behaviour change): the store's
 * gateway repo, the sandbox driver and the local adapter's send() are wrapped in timing proxies,
 * and the ACP byte streams of both sandboxes are tapped to see when a session/prompt is written
 * and its response read. That yields the per-phase breakdown printed under `breakdown`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import * as acp from '@agentclientprotocol/sdk';
import { stringify } from 'yaml';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import type { ChannelAdapter, TurnOutcome } from '../src/adapters/types.js';
import { platformAdapters, startGatewayApp, type Running } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openContext, type Context } from '../src/context.js';
import { sandboxSpecFor } from '../src/gateway/index.js';
import { createTurnWatcher } from '../src/gateway/watch.js';
import type { SandboxDriver, SandboxStdio } from '../src/sandbox/types.js';
import type { GatewayRepo } from '../src/store/gateway.js';
import type { Store } from '../src/store/index.js';
import { startConditions } from './conditions.js';
import { summary } from './stats.js';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '10' },
    /** Default: embedded PGlite and the in-process queue. */
    'database-url': { type: 'string' },
    'redis-url': { type: 'string' },
  },
});
const iterations = Number(values.iterations);
const warmup = Number(values.warmup);
/** The targets: accepted → prompt written p95 ≤ 10 ms over the bare client; the whole turn adds p95 ≤ 20 ms. */
const TARGET_TO_PROMPT_ADDED_P95_MS = 10;
const TARGET_ADDED_P95_MS = 20;
const TURN_TIMEOUT_MS = 30_000;

const WHAT = [
  'gateway: from just before intake.accept(localEvent({text: "echo <token>"})) on the local channel until the unit hands the',
  'reply to the local adapter\'s send() (kind "reply", after the reply is committed with status "replied"); the sandbox is',
  'awake, the ACP connection up and the conversation\'s session loaded (warm). A local-channel watcher follows the turn as',
  '`agent-vm send` would; the turn is fully finished (status "delivered") before the next measurement starts.',
  'bare: a second sandbox with the same SandboxSpec (sandboxSpecFor of the same profile, other agentId) running the same',
  'reference agent, driven over driver.attach() by a minimal @agentclientprotocol/sdk client: from just before session/prompt',
  '"echo <token>" until its response resolves (reply chunk received). No gateway, no database, no queue.',
  'added: per-iteration gateway − bare (paired by iteration). It is a round-trip difference, so it counts the gateway\'s work',
  'both before the prompt (intake, queue, DB, session lookup) and after the reply (outbox read, storing the reply), i.e. it',
  'bounds from above the overhead from "message accepted" to "prompt arrives at the agent"; that part alone is',
  'breakdown.marks_ms.promptWritten (accept → session/prompt bytes written to the sandbox\'s attached stdin).',
].join(' ');

// ------------------------------------------------------------------ tracing

interface Trace {
  t0: number;
  marks: Record<string, number>;
  calls: Record<string, number>;
}
let cur: Trace | undefined;
const now = () => performance.now();
function mark(name: string): void {
  if (cur && cur.marks[name] === undefined) cur.marks[name] = now() - cur.t0;
}
function addCall(name: string, ms: number): void {
  if (cur) cur.calls[name] = (cur.calls[name] ?? 0) + ms;
}

/** Times every method of `target` into the current trace as `<label>.<method>`; `after` may set marks. */
function traced<T extends object>(target: T, label: string, after?: (method: string, args: unknown[], result: unknown) => void): T {
  return new Proxy(target, {
    get(t, prop, receiver) {
      const v = Reflect.get(t, prop, receiver) as unknown;
      if (typeof v !== 'function' || typeof prop !== 'string') return v;
      const fn = v as (...a: unknown[]) => unknown;
      return (...args: unknown[]) => {
        const trace = cur;
        const s = now();
        if (label === 'repo' && (prop === 'claimNext' || prop === 'nextOpenEvent')) mark('pickup');
        const r = fn.apply(t, args);
        if (r && typeof (r as Promise<unknown>).then === 'function') {
          return (r as Promise<unknown>).then((res) => {
            if (trace === cur) {
              addCall(`${label}.${prop}`, now() - s);
              after?.(prop, args, res);
            }
            return res;
          });
        }
        if (r && typeof (r as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') {
          // readOutbox: time the whole iteration.
          return (async function* () {
            yield* r as AsyncIterable<unknown>;
            if (trace === cur) {
              addCall(`${label}.${prop}`, now() - s);
              after?.(prop, args, undefined);
            }
          })();
        }
        return r;
      };
    },
  });
}

/** Taps an attached stdio: marks the session/prompt write and the read of its response. */
function tapStdio(io: SandboxStdio, prefix: string): SandboxStdio {
  const stdin = io.stdin as Writable;
  const write = stdin.write.bind(stdin) as (...a: unknown[]) => boolean;
  stdin.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (cur && chunk instanceof Uint8Array && Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).includes('"session/prompt"')) {
      mark(`${prefix}promptWritten`);
    }
    return write(chunk, ...rest);
  }) as typeof stdin.write;
  // The driver's demuxer writes agent stdout into this PassThrough; wrapping write (the producer
  // side) does not change how the ACP client reads it.
  const stdout = io.stdout as Writable & NodeJS.ReadableStream;
  const push = stdout.write.bind(stdout) as (...a: unknown[]) => boolean;
  stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (cur && chunk instanceof Uint8Array && Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).includes('"stopReason"')) {
      mark(`${prefix}responseRead`);
    }
    return push(chunk, ...rest);
  }) as typeof stdout.write;
  return io;
}

// ------------------------------------------------------------------ setup

const tag = randomBytes(3).toString('hex');
const profileId = `bench-turn-${tag}`;
const bareId = `bench-turn-bare-${tag}`;
const tmp = path.join(os.tmpdir(), `agentvm-bench-turn-${tag}`);
const profilesDir = path.join(tmp, 'profiles');

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no answer in ${TURN_TIMEOUT_MS} ms`)), TURN_TIMEOUT_MS)))]).finally(() =>
    clearTimeout(t),
  );
}

interface Bare {
  prompt(text: string): Promise<string>;
  close(): void;
}

async function connectBare(driver: SandboxDriver): Promise<Bare> {
  const io = tapStdio(await driver.attach(bareId), 'bare.');
  const chunks: string[] = [];
  const app = acp.client({ name: 'bench-bare' }).onNotification('session/update', ({ params }) => {
    const u = params.update;
    if (u.sessionUpdate === 'agent_message_chunk' && u.content.type === 'text') chunks.push(u.content.text);
  });
  const conn = app.connect(
    acp.ndJsonStream(Writable.toWeb(io.stdin as Writable) as WritableStream<Uint8Array>, Readable.toWeb(io.stdout as Readable) as ReadableStream<Uint8Array>),
  );
  await withTimeout(
    conn.agent.request('initialize', {
      protocolVersion: acp.PROTOCOL_VERSION,
      clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
      clientInfo: { name: 'bench-bare', version: '0' },
    }),
    'bare initialize',
  );
  const { sessionId } = await withTimeout(conn.agent.request('session/new', { cwd: '/workspace', mcpServers: [] }), 'bare session/new');
  return {
    async prompt(text) {
      chunks.length = 0;
      const r = await conn.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text }] });
      // As the gateway does: updates sent just before the response are dispatched on the next ticks.
      await new Promise((resolve) => setImmediate(resolve));
      if (r.stopReason !== 'end_turn') throw new Error(`bare turn stopped: ${r.stopReason}`);
      return chunks.join('');
    },
    close() {
      conn.close();
      io.close();
    },
  };
}

const mean = (xs: number[]) => Math.round((xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)) * 10) / 10;
const stats = (xs: number[]) => {
  const s = summary(xs);
  return { p50: s.p50, p95: s.p95, p99: s.p99, mean: mean(xs), min: s.min, max: s.max };
};

async function main(): Promise<void> {
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
  });

  await mkdir(profilesDir, { recursive: true });
  await writeFile(
    path.join(profilesDir, `${profileId}.yaml`),
    stringify({
      version: 1,
      id: profileId,
      name: `Bench ${profileId}`,
      agent: { command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'] },
      runtime: 'runsc',
      limits: { cpus: 1, memoryMiB: 256, pids: 128 },
      risk: 'L1',
      idle: { sleepAfterSeconds: 86_400 },
      bindings: [{ platform: 'local', channels: ['*'] }],
    }),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AGENTVM_RUNTIME: 'runsc',
    AGENTVM_LOG_LEVEL: 'silent',
    AGENTVM_DATA_DIR: path.join(tmp, 'data'),
    AGENTVM_PROFILES_DIR: profilesDir,
  };
  delete env.DATABASE_URL; // embedded PGlite unless --database-url
  delete env.REDIS_URL; // in-process queue unless --redis-url
  if (values['database-url']) env.DATABASE_URL = values['database-url'];
  if (values['redis-url']) env.REDIS_URL = values['redis-url'];
  const config = loadConfig(env);
  const conditions = startConditions({ backend: { database: values['database-url'] ? 'postgres' : 'pglite', queue: values['redis-url'] ? 'redis' : 'memory' }, runtime: 'runsc' });

  let ctx: Context | undefined;
  let running: Running | undefined;
  let bare: Bare | undefined;
  try {
    ctx = await openContext(config);
    const rawRepo = ctx.store.gateway;
    const repo = traced<GatewayRepo>(rawRepo, 'repo', (method, args, res) => {
      if (method === 'storeReply' && res === true) mark('stored');
      if (method === 'setStatus' && args[1] === 'delivered') mark('delivered');
    });
    const store = new Proxy(ctx.store, { get: (t, p, r) => (p === 'gateway' ? repo : (Reflect.get(t, p, r) as unknown)) }) as Store;
    const rawDriver = ctx.driver;
    const driver = traced<SandboxDriver>(
      new Proxy(rawDriver, {
        get(t, p, r) {
          if (p === 'attach') return async (id: string) => tapStdio(await rawDriver.attach(id), '');
          return Reflect.get(t, p, r) as unknown;
        },
      }),
      'driver',
      (method) => {
        if (method === 'readOutbox') mark('outboxRead');
      },
    );
    running = await startGatewayApp(
      { ...ctx, store, driver },
      {
        units: 'all',
        adapters: (cfg, deps) =>
          platformAdapters(cfg, deps).map((a): ChannelAdapter =>
            a.platform !== 'local'
              ? a
              : {
                  ...a,
                  async send(m) {
                    if (m.kind === 'reply') mark('sent');
                    return a.send(m);
                  },
                },
          ),
      },
    );
    const gw = running.gateway;
    const unit = gw.units.get(profileId)!;
    const profile = gw.router.profiles.get(profileId)!;
    // The watcher the local channel uses, on an un-instrumented-but-labelled repo so its queries
    // show up separately in the breakdown.
    const watcher = createTurnWatcher({ repo: traced<GatewayRepo>(rawRepo, 'watcher'), signals: gw.signals });

    // The baseline sandbox: the same spec as the profile's, under another agent id.
    await rawDriver.ensure({ ...sandboxSpecFor(profile, config.image), agentId: bareId });
    bare = await connectBare(rawDriver);

    const gatewayTurn = async (text: string): Promise<Trace> => {
      const event = localEvent(localMessageSchema.parse({ profile: profileId, conversation: 'bench', text }), 'bench');
      const trace: Trace = { t0: 0, marks: {}, calls: {} };
      cur = trace;
      trace.t0 = now();
      const r = await gw.intake.accept(event);
      mark('accepted');
      if (r.status !== 'accepted') throw new Error(`intake: ${r.status}`);
      let outcome: TurnOutcome | undefined;
      await withTimeout(
        (async () => {
          for await (const o of watcher.watch(event.id, undefined, { justAccepted: true })) {  // as the local channel and `agent-vm send` do
            if (o.kind !== 'progress') {
              mark('watched');
              outcome = o;
            }
          }
          await unit.idle();
        })(),
        'gateway turn',
      );
      mark('idle');
      cur = undefined;
      const want = text.slice('echo '.length);
      if (outcome?.kind !== 'reply' || outcome.text !== want) throw new Error(`gateway turn: unexpected outcome ${JSON.stringify(outcome)}`);
      if (trace.marks.sent === undefined) throw new Error('gateway turn: the reply never reached the adapter');
      return trace;
    };
    const bareTurn = async (text: string): Promise<Trace> => {
      const trace: Trace = { t0: 0, marks: {}, calls: {} };
      cur = trace;
      trace.t0 = now();
      const reply = await withTimeout(bare!.prompt(text), 'bare turn');
      mark('bare.done');
      cur = undefined;
      if (reply !== text.slice('echo '.length)) throw new Error(`bare turn: unexpected reply ${JSON.stringify(reply)}`);
      return trace;
    };

    // Warm-up: the first gateway turn wakes the sandbox, connects ACP and creates the session.
    for (let i = 0; i < warmup && !interrupted; i++) {
      await gatewayTurn(`echo warmup-${i}`);
      await bareTurn(`echo warmup-${i}`);
    }

    const g: Trace[] = [];
    const b: Trace[] = [];
    for (let i = 0; i < iterations && !interrupted; i++) {
      const text = `echo turn-${i}-${randomBytes(4).toString('hex')}`;
      if (i % 2 === 0) {
        g.push(await gatewayTurn(text));
        b.push(await bareTurn(text));
      } else {
        b.push(await bareTurn(text));
        g.push(await gatewayTurn(text));
      }
    }
    if (interrupted) throw new Error(`interrupted after ${g.length} iterations`);

    const gMs = g.map((t) => t.marks.sent!);
    const bMs = b.map((t) => t.marks['bare.done']!);
    const added = gMs.map((x, i) => x - bMs[i]!);
    const r1 = (x: number) => Math.round(x * 10) / 10;
    const gs = stats(gMs);
    const bs = stats(bMs);
    const as = summary(added);
    // The measure: accepted → prompt bytes at the agent, against the bare client's own
    // time from "about to prompt" to the same bytes written.
    const gPrompt = g.map((t) => t.marks.promptWritten!);
    const bPrompt = b.map((t) => t.marks['bare.promptWritten'] ?? 0);
    const addedPrompt = summary(gPrompt.map((x, i) => x - bPrompt[i]!));
    const markNames = ['accepted', 'pickup', 'promptWritten', 'responseRead', 'outboxRead', 'stored', 'sent', 'watched', 'delivered', 'idle'];
    const p = (xs: Array<number | undefined>) => {
      const s = summary(xs.filter((x): x is number => x !== undefined));
      return { p50: s.p50, p95: s.p95 };
    };
    const callNames = [...new Set(g.flatMap((t) => Object.keys(t.calls)))].sort();
    const result = {
      bench: 'warm-turn',
      what: WHAT,
      runtime: 'runsc',
      database: ctx.config.databaseUrl ? 'postgres' : 'pglite',
      queue: gw.queues.kind,
      iterations: g.length,
      warmup,
      gateway: gs,
      bare: bs,
      added: { p50: as.p50, p95: as.p95, p99: as.p99, mean: mean(added) },
      addedByPercentile: { p50: r1(gs.p50 - bs.p50), p95: r1(gs.p95 - bs.p95), p99: r1(gs.p99 - bs.p99) },
      to_prompt: {
        what: 'accepted → session/prompt written to the agent (gateway) vs about-to-prompt → written (bare); the target applies to added.p95',
        gateway: stats(gPrompt),
        bare: stats(bPrompt),
        added: { p50: addedPrompt.p50, p95: addedPrompt.p95, p99: addedPrompt.p99 },
      },
      target: { toPromptAddedP95Ms: TARGET_TO_PROMPT_ADDED_P95_MS, addedP95Ms: TARGET_ADDED_P95_MS, on: 'to_prompt.added.p95 and added.p95' },
      pass: addedPrompt.p95 <= TARGET_TO_PROMPT_ADDED_P95_MS && as.p95 <= TARGET_ADDED_P95_MS,
      breakdown: {
        // Time since just before intake.accept at which each point of a gateway turn is reached.
        marks_ms: Object.fromEntries(markNames.map((m) => [m, p(g.map((t) => t.marks[m]))])),
        // Gateway ACP leg alone (prompt bytes written → response bytes read) vs the same leg on the bare side.
        acp_leg_ms: {
          gateway: p(g.map((t) => (t.marks.responseRead ?? NaN) - (t.marks.promptWritten ?? NaN)).filter((x) => !Number.isNaN(x))),
          bare: p(b.map((t) => (t.marks['bare.responseRead'] ?? NaN) - (t.marks['bare.promptWritten'] ?? NaN)).filter((x) => !Number.isNaN(x))),
        },
        after_reply_read_to_sent_ms: p(g.map((t) => (t.marks.sent ?? NaN) - (t.marks.responseRead ?? NaN)).filter((x) => !Number.isNaN(x))),
        // Total time per turn spent in each store / driver call (watcher.* = the channel's watcher).
        calls_ms: Object.fromEntries(callNames.map((c) => [c, p(g.map((t) => t.calls[c] ?? 0))])),
      },
      conditions: conditions.end(),
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    cur = undefined;
    bare?.close();
    await running?.stop().catch((err: unknown) => process.stderr.write(`stopping the gateway failed: ${String(err)}\n`));
    if (ctx) {
      for (const id of [profileId, bareId]) await ctx.driver.destroy(id).catch((err: unknown) => process.stderr.write(`destroying ${id} failed: ${String(err)}\n`));
      await ctx.close().catch(() => undefined);
    }
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench/warm-turn failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
