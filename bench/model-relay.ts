/**
 * What the model relay adds to a streamed model call: time to first byte and to last byte of a
 * streaming answer from each fake provider (127.0.0.1), straight vs through the relay (token
 * check, allowlist, daily budget lookup, secret resolution, header filtering, usage metering),
 * interleaved call by call so machine noise hits both alike. Both sides use the same keep-alive
 * HTTP client. Prints JSON; the target is an added p95 under 5 ms.
 *
 * By default the three parties run as three processes, as in production (the agent in its
 * sandbox, the relay in the gateway, the provider elsewhere): `--topology single` puts them on one
 * event loop instead, where the client's and the fake's work also delays the relay.
 *
 *   node --import tsx bench/model-relay.ts [--iterations 400] [--warmup 50] [--topology processes|single]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createModelRelay, memoryBudget, type ModelProvider } from '../src/governance/model-relay/index.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createLogger } from '../src/log.js';
import { startFakeAnthropic, startFakeGemini, startFakeOpenAI } from '../test/fakes/providers/index.js';
import { authHeaders, streamingCall } from '../test/fakes/providers/harness.js';
import { percentile } from './stats.js';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '400' },
    warmup: { type: 'string', default: '50' },
    topology: { type: 'string', default: 'processes' },
    role: { type: 'string' },
    setup: { type: 'string' },
  },
});
const iterations = Number(values.iterations);
const warmup = Number(values.warmup);
const TARGET_ADDED_P95_MS = 5;

const r3 = (x: number) => Math.round(x * 1000) / 1000;
function stats(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, p50: r3(percentile(s, 50)), p95: r3(percentile(s, 95)), p99: r3(percentile(s, 99)), max: r3(s.at(-1) ?? NaN) };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/** One streamed call; resolves to [ms to first body byte, ms to last byte]. */
function timed(base: string, path: string, headers: Record<string, string>, body: string): Promise<[number, number]> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = -1;
    const req = http.request({ host: u.hostname, port: u.port, method: 'POST', path, headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }, agent }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode} from ${base}${path}`));
      res.on('data', () => {
        if (first < 0) first = performance.now() - t0;
      });
      res.on('end', () => resolve([first, performance.now() - t0]));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const PROVIDERS: ModelProvider[] = ['anthropic', 'openai', 'gemini'];
const MODELS: Record<ModelProvider, string> = { anthropic: 'claude-sonnet-4-5-20250929', openai: 'gpt-5-codex', gemini: 'gemini-2.5-flash' };
const TEXT = 'The relay forwards this answer chunk by chunk while it counts the tokens it used. '.repeat(4);

interface FakesInfo {
  urls: Record<ModelProvider, string>;
  keys: Record<ModelProvider, string>;
}
interface RelayInfo {
  url: string;
  tokens: Record<ModelProvider, string>;
}

/** The three fakes, answering every call with TEXT. */
async function startFakes(): Promise<FakesInfo & { close(): Promise<void> }> {
  const fakes = await Promise.all([startFakeAnthropic({ defaultText: TEXT }), startFakeOpenAI({ defaultText: TEXT }), startFakeGemini({ defaultText: TEXT })]);
  const [a, o, g] = fakes;
  // The bench makes thousands of calls: keep no record of them.
  for (const f of fakes) Object.defineProperty(f.requests, 'push', { value: () => 0 });
  return {
    urls: { anthropic: a.url, openai: o.url, gemini: g.url },
    keys: { anthropic: a.apiKey, openai: o.apiKey, gemini: g.apiKey },
    close: async () => void (await Promise.all(fakes.map((f) => f.close()))),
  };
}

/** A relay in front of `fakes`, a token per provider, and a turn open for each. */
async function startRelay(fakes: FakesInfo): Promise<RelayInfo & { close(): Promise<void> }> {
  const relay = await createModelRelay({
    listen: { host: '127.0.0.1', port: 0 },
    upstreams: fakes.urls,
    secrets: createSecretResolver({ env: { A_KEY: fakes.keys.anthropic, O_KEY: fakes.keys.openai, G_KEY: fakes.keys.gemini } }),
    logger: createLogger('silent'),
    budget: memoryBudget(),
    onEvent: () => undefined,
  });
  const ref = { anthropic: 'A_KEY', openai: 'O_KEY', gemini: 'G_KEY' };
  const tokens = {} as Record<ModelProvider, string>;
  for (const p of PROVIDERS) {
    tokens[p] = relay.issueToken({ profile: 'bench', provider: p, key: `secret://${ref[p]}`, allow: [MODELS[p]], dailyTokens: 1_000_000_000 }).token;
  }
  relay.beginTurn({ profile: 'bench', turnId: 'bench' });
  return { url: relay.url, tokens, close: () => relay.close() };
}

/** Runs this script in `role`, and resolves to the first JSON line it prints. */
function child<T>(role: string, setup?: unknown): Promise<{ info: T; proc: ChildProcess }> {
  const args = ['--import', 'tsx', fileURLToPath(import.meta.url), '--role', role, ...(setup === undefined ? [] : ['--setup', JSON.stringify(setup)])];
  const proc = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`${role} exited (${code}) before it was ready`)));
    createInterface({ input: proc.stdout! }).once('line', (line) => resolve({ info: JSON.parse(line) as T, proc }));
  });
}

async function serveRole(role: string): Promise<void> {
  const server = role === 'fakes' ? await startFakes() : await startRelay(JSON.parse(values.setup ?? '{}') as FakesInfo);
  const { close: _close, ...info } = server;
  process.stdout.write(`${JSON.stringify(info)}\n`);
  // Ends when the parent closes our stdin.
  process.stdin.resume();
  process.stdin.on('end', () => void server.close().then(() => process.exit(0)));
}

async function main(): Promise<void> {
  if (values.role) return serveRole(values.role);
  const procs: ChildProcess[] = [];
  const closers: Array<() => Promise<void>> = [];
  let fakes: FakesInfo;
  let relay: RelayInfo;
  if (values.topology === 'single') {
    const f = await startFakes();
    const r = await startRelay(f);
    closers.push(() => r.close(), () => f.close());
    [fakes, relay] = [f, r];
  } else {
    const f = await child<FakesInfo>('fakes');
    const r = await child<RelayInfo>('relay', f.info);
    procs.push(r.proc, f.proc);
    [fakes, relay] = [f.info, r.info];
  }
  const results: Record<string, unknown> = {};
  let worstAddedP95 = 0;
  try {
    for (const provider of PROVIDERS) {
      const call = streamingCall(provider, MODELS[provider]);
      const direct = { base: fakes.urls[provider], path: call.path.replace(`/${provider}`, ''), headers: authHeaders(provider, fakes.keys[provider]) };
      const relayed = { base: relay.url, path: call.path, headers: authHeaders(provider, relay.tokens[provider]) };
      const series = { direct: { ttfb: [] as number[], ttlb: [] as number[] }, relay: { ttfb: [] as number[], ttlb: [] as number[] } };
      for (let i = 0; i < warmup + iterations; i++) {
        const order = i % 2 === 0 ? (['direct', 'relay'] as const) : (['relay', 'direct'] as const);
        for (const which of order) {
          const c = which === 'direct' ? direct : relayed;
          const [ttfb, ttlb] = await timed(c.base, c.path, c.headers, call.body);
          if (i >= warmup) {
            series[which].ttfb.push(ttfb);
            series[which].ttlb.push(ttlb);
          }
        }
      }
      const d = { ttfb: stats(series.direct.ttfb), ttlb: stats(series.direct.ttlb) };
      const r = { ttfb: stats(series.relay.ttfb), ttlb: stats(series.relay.ttlb) };
      const added = {
        ttfb: { p50: r3(r.ttfb.p50 - d.ttfb.p50), p95: r3(r.ttfb.p95 - d.ttfb.p95) },
        ttlb: { p50: r3(r.ttlb.p50 - d.ttlb.p50), p95: r3(r.ttlb.p95 - d.ttlb.p95) },
      };
      worstAddedP95 = Math.max(worstAddedP95, added.ttfb.p95, added.ttlb.p95);
      results[provider] = { direct: d, relay: r, added };
    }
  } finally {
    agent.destroy();
    for (const c of closers) await c();
    for (const p of procs) p.stdin?.end();
    await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode === null ? p.once('exit', r) : r(null)))));
  }
  const out = {
    bench: 'model-relay',
    unit: 'ms',
    conditions: {
      topology: values.topology === 'single' ? 'client, relay and fakes on one event loop' : 'client, relay and fakes in three processes',
      cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, loadavg: os.loadavg().map(r3), node: process.version, iterations, warmup,
      call: 'a streamed answer of about 20-25 SSE events (~330 characters of text) per provider',
    },
    results,
    target: { addedP95Ms: TARGET_ADDED_P95_MS, worstAddedP95Ms: r3(worstAddedP95), met: worstAddedP95 < TARGET_ADDED_P95_MS },
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
