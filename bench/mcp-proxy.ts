/**
 * tools/call latency through the MCP proxy against the same MCP SDK client talking straight to
 * the same upstream (a real MCP SDK server on 127.0.0.1), interleaved in one process so machine
 * noise hits both alike. The proxy runs as the gateway runs it: policy check, pin check, audit
 * rows into a real database (PGlite by default, or --database-url postgres://...). A third
 * series measures `auditSync: true` (decision row written before forwarding). Prints JSON.
 *
 *   node --import tsx bench/mcp-proxy.ts [--iterations 2000] [--database-url postgres://...]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createAuditLog } from '../src/governance/audit.js';
import { createMcpProxy, type McpEndpoint, type McpProxy } from '../src/governance/mcp-proxy.js';
import { validateProfile } from '../src/governance/profile.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createLogger } from '../src/log.js';
import { openStore } from '../src/store/index.js';
import { startFakeUpstream } from '../test/fakes/mcp-upstream.js';
import { startConditions } from './conditions.js';
import { percentile } from './stats.js';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '2000' },
    warmup: { type: 'string', default: '300' },
    'database-url': { type: 'string' },
  },
});
const iterations = Number(values.iterations);
const warmup = Number(values.warmup);

const r3 = (x: number) => Math.round(x * 1000) / 1000;
function stats(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, p50: r3(percentile(s, 50)), p90: r3(percentile(s, 90)), p99: r3(percentile(s, 99)), min: r3(s[0] ?? NaN), max: r3(s.at(-1) ?? NaN) };
}

async function client(url: string, headers: Record<string, string> = {}): Promise<Client> {
  const c = new Client({ name: 'bench', version: '1.0.0' });
  await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
  return c;
}
const headersOf = (ep: McpEndpoint) => Object.fromEntries(ep.headers.map((h) => [h.name, h.value]));

async function main(): Promise<void> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'agentvm-bench-mcp-'));
  const store = await openStore({ databaseUrl: values['database-url'], dataDir });
  const conditions = startConditions({ backend: { database: store.kind } });
  await store.migrate();
  const upstream = await startFakeUpstream({ jsonResponse: true });
  const secret = randomBytes(16).toString('hex');
  const logger = createLogger('silent');
  const id = `bench-${randomBytes(3).toString('hex')}`;
  const { profile, issues } = validateProfile(
    {
      version: 1, id, name: id, agent: { command: ['x'] }, risk: 'L1',
      bindings: [{ platform: 'local', channels: [id] }],
      secrets: { tok: 'secret://BENCH_TOKEN' },
      tools: { servers: [{ name: 'srv', url: upstream.url, headers: { Authorization: 'Bearer secret://tok' } }], allow: ['srv.echo'] },
    },
    'bench.yaml',
  );
  if (!profile) throw new Error(JSON.stringify(issues));
  const common = {
    listen: { host: '127.0.0.1', port: 0 }, pins: store.pins, audit: createAuditLog(store.audit), logger,
    secrets: createSecretResolver({ env: { BENCH_TOKEN: secret } }), upstreamTimeoutMs: 10_000,
  };
  const proxies: McpProxy[] = [await createMcpProxy(common), await createMcpProxy({ ...common, auditSync: true })];
  try {
    for (const p of proxies) await p.register(profile);
    const direct = await client(upstream.url, { Authorization: `Bearer ${secret}` });
    const viaProxy = await client(proxies[0]!.url, headersOf(proxies[0]!.sessionEndpoint({ profile: id, sessionKey: 'bench' })));
    const viaSync = await client(proxies[1]!.url, headersOf(proxies[1]!.sessionEndpoint({ profile: id, sessionKey: 'bench-sync' })));
    const args = { text: 'x'.repeat(64) };
    /** Interleaves the series call by call, rotating which goes first; returns samples per series. */
    async function run(series: Record<string, { client: Client; tool: string }>): Promise<Record<string, number[]>> {
      const names = Object.keys(series);
      const out: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
      for (let i = 0; i < warmup + iterations; i++) {
        for (let k = 0; k < names.length; k++) {
          const which = names[(i + k) % names.length]!;
          const { client: c, tool } = series[which]!;
          const t0 = performance.now();
          const r = await c.callTool({ name: tool, arguments: args });
          const dt = performance.now() - t0;
          if (r.isError) throw new Error(`${which}: call failed: ${JSON.stringify(r.content)}`);
          if (i >= warmup) out[which]!.push(dt);
        }
      }
      return out;
    }
    // Phase 1 is the comparison the target is about; phase 2 (audit rows awaited) runs apart so
    // its database load does not disturb phase 1.
    const main = await run({ direct: { client: direct, tool: 'echo' }, proxy: { client: viaProxy, tool: 'srv__echo' } });
    await proxies[0]!.flush();
    const sync = await run({ direct: { client: direct, tool: 'echo' }, proxy: { client: viaSync, tool: 'srv__echo' } });
    const samples = { direct: main.direct!, proxy: main.proxy!, sync_direct: sync.direct!, proxy_audit_sync: sync.proxy! };
    await Promise.all(proxies.map((p) => p.flush()));
    const verify = await createAuditLog(store.audit).verify();

    const d = stats(samples.direct);
    const p = stats(samples.proxy);
    const s = stats(samples.proxy_audit_sync);
    const sd = stats(samples.sync_direct);
    const paired = stats(samples.proxy.map((x, i) => x - samples.direct[i]!));
    const result = {
      bench: 'mcp-proxy',
      iterations,
      database: store.kind,
      direct_ms: d,
      proxy_ms: p,
      added_p50_ms: r3(p.p50 - d.p50),
      added_p99_ms: r3(p.p99 - d.p99),
      added_paired_ms: paired,
      target: { added_p50_ms: 1, added_p99_ms: 3 },
      pass: p.p50 - d.p50 <= 1 && p.p99 - d.p99 <= 3,
      audit_sync: { direct_ms: sd, proxy_ms: s, added_p50_ms: r3(s.p50 - sd.p50), added_p99_ms: r3(s.p99 - sd.p99) },
      audit_rows_verified: verify.ok ? verify.rows : verify,
      upstream_calls: upstream.calls.get('echo'),
      conditions: conditions.end(),
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    await Promise.all([direct.close(), viaProxy.close(), viaSync.close()]);
  } finally {
    await Promise.allSettled(proxies.map((p) => p.close()));
    await upstream.close();
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench/mcp-proxy failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
