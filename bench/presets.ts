/**
 * Real agents as employees, measured: (1) a sleeping Claude Code employee woken by a message —
 * from the message accepted to the first `session/update` of its answer — through the real
 * gateway, against a bare wake of an identical sandbox driven over `driver.attach()` with the
 * gateway's own ACP client and its own relay (same run, A/B interleaved, alternating which goes
 * first); (2) memory per preset, idle and in the middle of a turn; (3) each preset image's size
 * and its rebuild time from the install cache (`image build --agents x --force`) against the
 * unchanged build of the same command. Model APIs are the local fakes, answering at once; the
 * model's own time is reported so it can be seen to be negligible. Prints JSON.
 *
 *   node --import tsx bench/presets.ts [--iterations 5] [--warmup 1] [--presets claude,codex,gemini] [--no-build]
 *
 * The wake path: the sandbox is stopped (snapshot taken, container stopped, workspace volume and
 * network kept), so each measured turn starts a stopped container (`ensure` → action "started"),
 * attaches, initializes the agent, then session/new (a new conversation) or session/load (the same
 * conversation again), then prompts.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startGatewayApp, type Running } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openContext } from '../src/context.js';
import { connectAgent } from '../src/gateway/acp.js';
import { sandboxSpecFor } from '../src/gateway/spec.js';
import { createModelRelay } from '../src/governance/model-relay/index.js';
import { validateProfile } from '../src/governance/profile.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createLogger } from '../src/log.js';
import { connectDocker } from '../src/sandbox/docker/engine.js';
import { conversationPaths, MODEL_RELAY_PORT } from '../src/sandbox/layout.js';
import type { SandboxDriver, SandboxStdio } from '../src/sandbox/types.js';
import { KEY_NAMES, MODELS, presetManifest, startProviderFakes, type RealPreset } from '../test/helpers/preset-gateway.js';
import { summary } from './stats.js';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    presets: { type: 'string', default: 'claude,codex,gemini' },
    'no-build': { type: 'boolean', default: false },
  },
});
const iterations = Number(values.iterations);
const warmup = Number(values.warmup);
const presets = values.presets.split(',').filter((p): p is RealPreset => ['claude', 'codex', 'gemini'].includes(p));
const TURN_MS = 180_000;
const tag = randomBytes(3).toString('hex');
const tmp = path.join(os.tmpdir(), `agentvm-bench-presets-${tag}`);
const now = () => performance.now();
const r1 = (x: number) => Math.round(x * 10) / 10;

// ------------------------------------------------------------------ tracing the ACP byte streams

interface Trace {
  t0: number;
  marks: Record<string, number>;
  /** Time spent in other driver calls during the turn (e.g. writeFiles making the conversation's directories). */
  calls: Record<string, number>;
  action?: string;
}
let cur: Trace | undefined;
const mark = (t: Trace | undefined, name: string) => {
  if (t && t.marks[name] === undefined) t.marks[name] = now() - t.t0;
};
const has = (chunk: unknown, s: string) => chunk instanceof Uint8Array && Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).includes(s);

/** What counts as the answer starting: text, a thought, a plan or a tool call (not e.g. a commands list). */
const ANSWER_UPDATES = ['"agent_message_chunk"', '"agent_thought_chunk"', '"tool_call"', '"plan"'];

/**
 * Marks, in the current trace: initialize written and answered, the session requested, the
 * session/prompt written, and after it the first session/update of any kind and the first of the answer.
 */
function tap(io: SandboxStdio): SandboxStdio {
  const stdin = io.stdin as NodeJS.WritableStream & { write: (...a: unknown[]) => boolean };
  const write = stdin.write.bind(stdin);
  stdin.write = (chunk: unknown, ...rest: unknown[]) => {
    if (has(chunk, '"initialize"')) mark(cur, 'initializeWritten');
    if (has(chunk, '"session/new"') || has(chunk, '"session/load"')) mark(cur, 'sessionRequested');
    if (has(chunk, '"session/prompt"')) mark(cur, 'promptWritten');
    return write(chunk, ...rest);
  };
  const stdout = io.stdout as unknown as { write: (...a: unknown[]) => boolean };
  const push = stdout.write.bind(stdout);
  stdout.write = (chunk: unknown, ...rest: unknown[]) => {
    if (cur?.marks.initializeWritten !== undefined && has(chunk, '"protocolVersion"')) mark(cur, 'initializeAnswered');
    if (cur && has(chunk, '"session/update"') && cur.marks.promptWritten !== undefined) {
      mark(cur, 'firstUpdate');
      if (ANSWER_UPDATES.some((k) => has(chunk, k))) mark(cur, 'firstAnswerUpdate');
    }
    return push(chunk, ...rest);
  };
  return io;
}

/** The driver as the gateway uses it, with wake (ensure) timed and attached streams tapped. */
function traced(d: SandboxDriver): SandboxDriver {
  return new Proxy(d, {
    get(t, prop, receiver) {
      const v = Reflect.get(t, prop, receiver) as unknown;
      if (prop === 'ensure') {
        return async (...a: Parameters<SandboxDriver['ensure']>) => {
          const trace = cur;
          mark(trace, 'ensureStart');
          const h = await t.ensure(...a);
          mark(trace, 'ensureEnd');
          if (trace) trace.action ??= h.action;
          return h;
        };
      }
      if (prop === 'attach') return async (id: string) => tap(await t.attach(id));
      if (typeof v !== 'function' || typeof prop !== 'string') return v;
      const fn = v as (...a: unknown[]) => unknown;
      return (...a: unknown[]) => {
        const trace = cur;
        const s0 = now();
        const r = fn.apply(t, a);
        if (trace && r instanceof Promise) void r.finally(() => (trace.calls[prop] = (trace.calls[prop] ?? 0) + now() - s0)).catch(() => undefined);
        return r;
      };
    },
  });
}

// ------------------------------------------------------------------ setup

const fakes = await startProviderFakes();
const ids = Object.fromEntries(presets.map((p) => [p, `bench-pre-${p}-${tag}`])) as Record<RealPreset, string>;
const referenceId = `bench-pre-ref-${tag}`;
const bareId = `bench-pre-bare-${tag}`;
const manifests = [
  ...presets.map((p) => presetManifest(ids[p], p, { idle: { sleepAfterSeconds: 86_400 } })),
  { version: 1, id: referenceId, name: 'reference', agent: { preset: 'reference' }, runtime: 'runsc', limits: { cpus: 1, memoryMiB: 256, pids: 128 }, risk: 'L1', bindings: [{ platform: 'local', channels: ['*'] }] },
];
await mkdir(path.join(tmp, 'profiles'), { recursive: true });
for (const m of manifests) await writeFile(path.join(tmp, 'profiles', `${m.id as string}.yaml`), stringify(m));
const config = loadConfig({
  ...process.env,
  AGENTVM_RUNTIME: process.env.AGENTVM_RUNTIME ?? 'runsc',
  AGENTVM_LOG_LEVEL: 'silent',
  AGENTVM_DATA_DIR: path.join(tmp, 'data'),
  AGENTVM_PROFILES_DIR: path.join(tmp, 'profiles'),
  ...fakes.env(),
});
const logger = createLogger('silent');
const opened = await openContext(config, logger);
const rawDriver = opened.driver;
const ctx = { ...opened, driver: traced(rawDriver) };
const gw: Running = await startGatewayApp(ctx, { units: 'all', schedules: false });
const docker = connectDocker(config.docker);

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no answer in ${TURN_MS / 1000} s`)), TURN_MS)))]).finally(() => clearTimeout(t));
}

/** One message through the local channel; resolves with the reply's text (throws on a notice). */
async function turn(profile: string, text: string, conversation: string): Promise<{ eventId: string; text: string }> {
  const event = localEvent(localMessageSchema.parse({ profile, text, conversation }), 'bench');
  const accepted = await gw.gateway.intake.accept(event);
  if (accepted.status === 'rejected') throw new Error(`rejected: ${accepted.message}`);
  let out = '';
  await withTimeout((async () => {
    for await (const o of gw.gateway.watcher.watch(event.id)) {
      if (o.kind === 'notice') throw new Error(`turn failed: ${o.text}`);
      if (o.kind === 'reply') out = o.text;
    }
  })(), `turn ${event.id}`);
  return { eventId: event.id, text: out };
}

/** The model calls' time within a turn, from the relay's audit rows. */
async function modelMs(eventId: string): Promise<number> {
  await gw.gateway.flushAudit();
  const rows = await gw.gateway.audit.tail(500);
  return rows
    .filter((r) => r.action === 'model.call' && ((r.data as { turnIds?: string[] }).turnIds ?? []).includes(eventId))
    .reduce((n, r) => n + ((r.data as { durationMs?: number }).durationMs ?? 0), 0);
}

// ------------------------------------------------------------------ (1) waking a sleeping Claude

interface WakeSample { marks: Record<string, number>; calls: Record<string, number>; model: number; action: string }

async function gatewayWake(conversation: string): Promise<WakeSample> {
  const unit = gw.gateway.units.get(ids.claude)!;
  if (!(await unit.sleep('bench'))) throw new Error('the unit would not sleep');
  const t: Trace = { t0: now(), marks: {}, calls: {} };
  cur = t;
  const r = await turn(ids.claude, 'Say hello.', conversation);
  cur = undefined;
  return checked({ marks: t.marks, calls: t.calls, model: await modelMs(r.eventId), action: t.action ?? '?' });
}

function checked(s: WakeSample): WakeSample {
  for (const k of ['ensureStart', 'ensureEnd', 'initializeWritten', 'initializeAnswered', 'sessionRequested', 'promptWritten', 'firstUpdate', 'firstAnswerUpdate']) {
    if (s.marks[k] === undefined) throw new Error(`mark ${k} missing: ${JSON.stringify(s.marks)}`);
  }
  return s;
}

const bareProfile = validateProfile(presetManifest(bareId, 'claude'), `${bareId}.yaml`).profile!;
const bareHost = await rawDriver.prepareNetwork(bareId);
const bareRelay = await createModelRelay({
  listen: { host: bareHost, port: MODEL_RELAY_PORT },
  upstreams: config.modelApis,
  secrets: createSecretResolver({ env: config.secrets.env }),
  logger,
});
const bareEnv = bareRelay.issueToken({ profile: bareId, provider: 'anthropic', key: `secret://${KEY_NAMES.anthropic}`, allow: [MODELS.claude] }).env;
bareRelay.beginTurn({ profile: bareId, turnId: 'bench' });
const bareSpec = sandboxSpecFor(bareProfile, config.image, 'runsc', bareEnv);
const bareSessions = new Map<string, string>();

/** The same wake without the gateway: start the stopped sandbox, attach, initialize, new/load, prompt. */
async function bareWake(conversation: string): Promise<WakeSample> {
  await rawDriver.sleep(bareId);
  const paths = conversationPaths(`bare:${conversation}`);
  const t: Trace = { t0: now(), marks: {}, calls: {} };
  cur = t;
  mark(t, 'ensureStart');
  const h = await rawDriver.ensure(bareSpec);
  mark(t, 'ensureEnd');
  const conn = await connectAgent(tap(await rawDriver.attach(bareId)), { logger });
  try {
    await rawDriver.writeFiles(bareId, paths.outbox, []);
    const known = bareSessions.get(conversation);
    let sid = known;
    if (known) await withTimeout(conn.loadSession(known, { cwd: paths.cwd, mcpServers: [] }), 'bare session/load');
    else sid = await withTimeout(conn.newSession({ cwd: paths.cwd, mcpServers: [] }), 'bare session/new');
    bareSessions.set(conversation, sid!);
    await withTimeout(conn.prompt(sid!, [{ type: 'text', text: 'Say hello.' }], { onUpdate: () => undefined, onPermission: async () => ({ allow: false, reason: 'bench' }) }), 'bare prompt');
  } finally {
    cur = undefined;
    conn.close();
  }
  return checked({ marks: t.marks, calls: t.calls, model: 0, action: h.action });
}

type Mode = 'new' | 'same';
const samples: Record<'gateway' | 'bare', Record<Mode, WakeSample[]>> = { gateway: { new: [], same: [] }, bare: { new: [], same: [] } };
if (presets.includes('claude')) {
  // First contact: creates both sandboxes and the "same" conversations' sessions.
  await turn(ids.claude, 'Say hello.', 'same');
  await rawDriver.ensure(bareSpec);
  await bareWake('same');
  for (let i = 0; i < warmup + iterations; i++) {
    for (const mode of ['new', 'same'] as const) {
      const conv = mode === 'new' ? `new-${i}` : 'same';
      const order = (i + (mode === 'new' ? 0 : 1)) % 2 === 0 ? (['gateway', 'bare'] as const) : (['bare', 'gateway'] as const);
      for (const who of order) {
        const s = who === 'gateway' ? await gatewayWake(conv) : await bareWake(conv);
        if (i >= warmup) samples[who][mode].push(s);
      }
    }
  }
}
const p50 = (xs: number[]) => summary(xs).p50;
const wakeStats = (xs: WakeSample[]) => ({
  to_first_answer_update: summary(xs.map((x) => x.marks.firstAnswerUpdate!)),
  to_first_update: summary(xs.map((x) => x.marks.firstUpdate!)),
  // Where the time goes (p50 of each step, in order).
  steps_p50: {
    accept_to_ensure: p50(xs.map((x) => x.marks.ensureStart!)),
    ensure_start_container: p50(xs.map((x) => x.marks.ensureEnd! - x.marks.ensureStart!)),
    to_initialize_written: p50(xs.map((x) => x.marks.initializeWritten! - x.marks.ensureEnd!)),
    initialize: p50(xs.map((x) => x.marks.initializeAnswered! - x.marks.initializeWritten!)),
    to_session_requested: p50(xs.map((x) => x.marks.sessionRequested! - x.marks.initializeAnswered!)),
    session_to_prompt_written: p50(xs.map((x) => x.marks.promptWritten! - x.marks.sessionRequested!)),
    prompt_to_first_answer_update: p50(xs.map((x) => x.marks.firstAnswerUpdate! - x.marks.promptWritten!)),
  },
  other_driver_calls_p50: Object.fromEntries([...new Set(xs.flatMap((x) => Object.keys(x.calls)))].map((k) => [k, p50(xs.map((x) => x.calls[k] ?? 0))])),
  model_calls_ms: summary(xs.map((x) => x.model)),
  wake_actions: [...new Set(xs.map((x) => x.action))],
});

// ------------------------------------------------------------------ (2) memory per preset

async function memory(id: string): Promise<{ cgroupMiB: number; cgroupPeakMiB: number | null; rssMiB: number }> {
  const st = await rawDriver.status(id);
  const s = (await docker.getContainer(st.containerId).stats({ stream: false })) as unknown as { memory_stats: { usage?: number; max_usage?: number; stats?: Record<string, number> } };
  const ms = s.memory_stats;
  // As `docker stats` shows it: usage without the inactive page cache.
  const usage = (ms.usage ?? 0) - (ms.stats?.total_inactive_file ?? ms.stats?.inactive_file ?? 0);
  const rss = await rawDriver.exec(id, ['sh', '-c', "cat /proc/[0-9]*/status 2>/dev/null | awk '/^VmRSS:/ {s += $2} END {print s}'"], { timeoutMs: 20_000 });
  return { cgroupMiB: r1(usage / 1048576), cgroupPeakMiB: ms.max_usage === undefined ? null : r1(ms.max_usage / 1048576), rssMiB: r1(Number(rss.stdout.trim() || 0) / 1024) };
}
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

const mem: Record<string, unknown> = {};
{
  await gw.gateway.units.get(referenceId)!.wake();
  await settle(3000);
  const idle = await memory(referenceId);
  await turn(referenceId, 'echo hi', 'mem');
  mem.reference_baseline = { idle, note: 'the reference agent (no model) in the agent image, same runtime: the floor every sandbox pays' };
  await gw.gateway.units.get(referenceId)!.sleep('bench');
}
for (const p of presets) {
  const unit = gw.gateway.units.get(ids[p])!;
  await unit.wake();
  await settle(3000);
  const idleFresh = await memory(ids[p]);
  const fake = fakes.of(p);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  fake.enqueue({ text: `${'A long answer, word by word. '.repeat(40)}Done.`, hold: { afterEvents: 2, until: held } });
  const before = fake.requests.length;
  const running = turn(ids[p], 'Give me a long answer.', 'mem');
  const deadline = Date.now() + TURN_MS;
  while (!fake.requests.slice(before).some((q) => q.method === 'POST' && q.status === 0) && Date.now() < deadline) await settle(50);
  await settle(1000);
  const inTurn = await memory(ids[p]);
  release();
  await running;
  await settle(3000);
  const idleAfter = await memory(ids[p]);
  mem[p] = { idle_fresh: idleFresh, in_turn: inTurn, idle_after_turn: idleAfter, memoryLimitMiB: 1536 };
  await unit.sleep('bench');
}

// ------------------------------------------------------------------ (3) images

const images: Record<string, unknown> = {};
const agentImage = await docker.getImage(config.image).inspect();
images.agent_image = { image: config.image, sizeMB: Math.round(agentImage.Size / 1e6) };
const cli = async (args: string[]) => {
  const t0 = now();
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', "const { main } = await import('./src/cli.ts'); process.exitCode = await main(process.argv.slice(1));", ...args], {
    cwd: path.resolve(import.meta.dirname, '..'),
    env: { ...process.env, AGENTVM_LOG_LEVEL: 'warn' },
    maxBuffer: 16 * 1024 * 1024,
  });
  return { ms: now() - t0, stdout };
};
/** What the CLI said about `image`: built or up to date, its own step's seconds, whether npm came from the cache. */
function buildLine(stdout: string, image: string): { action: string; step_s: number | null; install_from_cache?: boolean } {
  const line = stdout.split('\n').find((l) => l.includes(` ${image} `)) ?? '';
  const step = /in ([\d.]+) s\s*$/.exec(line)?.[1];
  const action = line.startsWith('up to date') ? 'up to date' : line.startsWith('built') ? 'built' : '?';
  return { action, step_s: step === undefined ? null : Number(step), ...(line.includes('npm install from cache') ? { install_from_cache: true } : {}) };
}
for (const p of values['no-build'] ? [] : presets) {
  const image = `agent-vm/agent-${p}:latest`;
  // First bring the image up to date with its inputs (a rebuilt agent image changes them), so the
  // baseline below really has nothing to do.
  const settled = await cli(['image', 'build', '--agents', p]);
  const before = await docker.getImage(image).inspect();
  const unchanged = await cli(['image', 'build', '--agents', p]);
  const forced = await cli(['image', 'build', '--agents', p, '--force']);
  const after = await docker.getImage(image).inspect();
  images[p] = {
    image,
    sizeMB: Math.round(after.Size / 1e6),
    overAgentImageMB: Math.round((after.Size - agentImage.Size) / 1e6),
    first_command: { s: r1(settled.ms / 1000), ...buildLine(settled.stdout, image) },
    unchanged_command: { s: r1(unchanged.ms / 1000), ...buildLine(unchanged.stdout, image) },
    forced_command: { s: r1(forced.ms / 1000), ...buildLine(forced.stdout, image) },
    agent_image_step_s: buildLine(forced.stdout, config.image).step_s,
    same_image_id_after_force: before.Id === after.Id,
  };
}

const dockerVersion = (await docker.version()).Version;
console.log(JSON.stringify({
  bench: 'presets',
  what: {
    wake: 'A sleeping (stopped) Claude Code employee gets a local-channel message: from just before intake.accept until the first session/update of its answer (text, thought, plan or tool call; to_first_update: of any kind) is read from the sandbox after session/prompt was written. steps_p50 splits it: queue/wake bookkeeping before ensure, the container start, attach, initialize, the session (new or load), the prompt. "new": a new conversation (session/new); "same": the same conversation again (session/load). bare: the identical sandbox spec with its own relay, started and driven over driver.attach() by the gateway\'s ACP client, no gateway/queue/database. ensure_start: the stopped container started; model_calls_ms: the model calls of the turn (fake API, answering at once).',
    memory: 'cgroup: the container\'s memory usage as docker stats shows it (usage minus inactive file cache; under runsc this includes the gVisor sentry); rss: the sum of VmRSS of the processes inside. idle_fresh: 3 s after a wake with no turn; in_turn: 1 s into a model answer held mid-stream; idle_after_turn: 3 s after the turn. cgroupPeakMiB: the cgroup max usage since the container started.',
    images: 'sizes from docker image inspect; each command is `agent-vm image build --agents x` (the CLI from source under tsx, so node start and the agent image step are in every one): first_command brings the preset image up to date; unchanged_command then has nothing to do (the baseline); forced_command adds --force (the preset image rebuilt, its npm install from the cache and Docker layers from the build cache). step_s: what the CLI reports for that image alone.',
  },
  conditions: { iterations, warmup, presets, runtime: 'runsc', docker: dockerVersion, host: { cpus: os.cpus().length, loadavg: os.loadavg().map(r1), memGiB: r1(os.totalmem() / 2 ** 30), node: process.version }, store: 'pglite', queue: 'memory', modelApi: 'local fake (answers at once)' },
  wake_ms: presets.includes('claude') ? {
    gateway: { new: wakeStats(samples.gateway.new), same: wakeStats(samples.gateway.same) },
    bare: { new: wakeStats(samples.bare.new), same: wakeStats(samples.bare.same) },
    added_p50_to_first_answer_update: {
      new: r1(p50(samples.gateway.new.map((x) => x.marks.firstAnswerUpdate!)) - p50(samples.bare.new.map((x) => x.marks.firstAnswerUpdate!))),
      same: r1(p50(samples.gateway.same.map((x) => x.marks.firstAnswerUpdate!)) - p50(samples.bare.same.map((x) => x.marks.firstAnswerUpdate!))),
    },
  } : null,
  memory_mib: mem,
  images,
}, null, 2));

await gw.stop();
bareRelay.endTurn('bench');
await bareRelay.close();
for (const id of [...Object.values(ids), referenceId, bareId]) await rawDriver.destroy(id).catch(() => undefined);
await opened.close();
await fakes.close();
await rm(tmp, { recursive: true, force: true });
