/**
 * What a sandbox on an internal network can reach, against real Docker with runsc. A hostile
 * agent tries every address the host has; only the ports its spec names on its own host address
 * answer. Its only way out is the egress relay, which tunnels to allowlisted host:port pairs and
 * refuses everything else (other ports, other hosts, names that resolve to loopback or metadata).
 */
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEgressRelay, forbiddenAddress, parseTarget, type EgressRelay } from '../src/governance/egress.js';
import type { AuditEntry } from '../src/governance/audit.js';
import { createLogger } from '../src/log.js';
import { bridgeName, chainFor } from '../src/sandbox/docker/firewall.js';
import type { SandboxDriver } from '../src/sandbox/types.js';
import { agentId } from './helpers/env.js';
import { makeDriver, sh, spec } from './helpers/sandbox.js';

const driver: SandboxDriver = makeDriver();
const OPEN_PORT = 3129;
const PROXY_PORT = 3128;
const agent = agentId('net');
let hostAddress: string;
/** A non-loopback address of this machine outside Docker (eth0 or similar). */
const lanAddress = Object.entries(os.networkInterfaces())
  .filter(([name]) => !name.startsWith('docker') && !name.startsWith('br-') && !name.startsWith('avm') && !name.startsWith('veth'))
  .flatMap(([, addrs]) => addrs ?? [])
  .find((a) => a.family === 'IPv4' && !a.internal)?.address;

/** Host services listening on every address: the open port, a closed one, and an egress target. */
const servers: http.Server[] = [];
async function serve(port: number, body: string): Promise<number> {
  const s = http.createServer((_req, res) => res.end(body));
  await new Promise<void>((r) => s.listen(port, '0.0.0.0', r));
  servers.push(s);
  return (s.address() as AddressInfo).port;
}
let closedPort: number;
let targetPort: number;
let relay: EgressRelay;
const audit: AuditEntry[] = [];

beforeAll(async () => {
  expect(lanAddress, 'this machine needs a non-loopback IPv4 address').toBeDefined();
  const h = await driver.ensure(spec(agent, { network: { mode: 'internal', hostPorts: [OPEN_PORT], proxyPort: PROXY_PORT }, limits: { cpus: 1, memoryMiB: 256, pids: 512 } }));
  hostAddress = h.hostAddress!;
  closedPort = await serve(0, 'closed port reached');
  targetPort = await serve(0, 'target reached');
  // The open port, on the host address only, stands in for the gateway's MCP endpoint.
  const open = http.createServer((_req, res) => res.end('open port reached'));
  await new Promise<void>((r) => open.listen(OPEN_PORT, hostAddress, r));
  servers.push(open);
  relay = await createEgressRelay({
    profile: 'net-test',
    allow: [`${lanAddress}:${targetPort}`, `localhost:${targetPort}`, `metadata.test:80`],
    listen: { host: hostAddress, port: PROXY_PORT },
    record: (e) => void audit.push(e),
    logger: createLogger('silent'),
    resolve: async (host) => (host === 'metadata.test' ? ['169.254.169.254'] : host === 'localhost' ? ['127.0.0.1'] : []),
  });
}, 120_000);

afterAll(async () => {
  await relay?.close();
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await driver.destroy(agent).catch(() => undefined);
  await driver.close();
});

/** fetch() from inside the sandbox, direct (Node's fetch ignores HTTP_PROXY). */
async function probe(url: string): Promise<string> {
  const r = await sh(driver, agent, `node -e 'fetch(process.argv[1],{signal:AbortSignal.timeout(4000)}).then(r=>r.text()).then(t=>console.log("reached: "+t),e=>console.log("blocked"))' ${url}`);
  return r.stdout.trim();
}

/** An HTTP CONNECT through the sandbox's HTTPS_PROXY, then a GET over the tunnel. */
async function viaProxy(target: string): Promise<string> {
  const script = `
    const http = require("http");
    const p = new URL(process.env.HTTPS_PROXY);
    const req = http.request({ host: p.hostname, port: p.port, method: "CONNECT", path: process.argv[1] });
    req.on("connect", (res, socket) => {
      if (res.statusCode !== 200) { console.log("refused " + res.statusCode); process.exit(0); }
      socket.write("GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n");
      let b = ""; socket.on("data", (d) => b += d); socket.on("end", () => console.log("tunnel: " + b.split("\\r\\n\\r\\n")[1]));
    });
    req.on("response", (res) => console.log("refused " + res.statusCode));
    req.on("error", (e) => console.log("error " + e.message));
    req.end();`;
  const r = await sh(driver, agent, `node -e '${script.replace(/'/g, `'"'"'`)}' ${target}`);
  return r.stdout.trim();
}

describe('the host as seen from an internal network', () => {
  it('answers only on the ports the spec names, at the agent\'s own host address', async () => {
    expect(await probe(`http://${hostAddress}:${OPEN_PORT}/`)).toBe('reached: open port reached');
    expect(await probe(`http://${hostAddress}:${closedPort}/`)).toBe('blocked');
    expect(await probe(`http://172.17.0.1:${closedPort}/`)).toBe('blocked');
    expect(await probe(`http://${lanAddress}:${closedPort}/`)).toBe('blocked');
    expect(await probe(`http://${lanAddress}:${targetPort}/`)).toBe('blocked');
    expect(await probe(`http://127.0.0.1:${OPEN_PORT}/`)).toBe('blocked');
  });

  it('sets the proxy for the sandbox, and exempts only the host address from it', async () => {
    const env = await sh(driver, agent, 'echo "$HTTPS_PROXY|$HTTP_PROXY|$NO_PROXY"');
    expect(env.stdout.trim()).toBe(`http://${hostAddress}:${PROXY_PORT}|http://${hostAddress}:${PROXY_PORT}|${hostAddress}`);
  });

  it('tunnels to an allowlisted host:port through the relay, and refuses everything else', async () => {
    audit.length = 0;
    expect(await viaProxy(`${lanAddress}:${targetPort}`)).toBe('tunnel: target reached');
    expect(await viaProxy(`${lanAddress}:${closedPort}`)).toBe('refused 403');
    expect(await viaProxy(`example.com:443`)).toBe('refused 403');
    // Allowlisted names that resolve to loopback or link-local metadata are refused anyway.
    expect(await viaProxy(`localhost:${targetPort}`)).toBe('refused 403');
    expect(await viaProxy('metadata.test:80')).toBe('refused 403');
    await new Promise((r) => setTimeout(r, 50));
    expect(audit.map((a) => [a.decision, a.subject, a.reason])).toEqual([
      ['allow', `${lanAddress}:${targetPort}`, null],
      ['deny', `${lanAddress}:${closedPort}`, 'not in egress.allow'],
      ['deny', 'example.com:443', 'not in egress.allow'],
      ['deny', `localhost:${targetPort}`, 'localhost resolves to a loopback address'],
      ['deny', 'metadata.test:80', 'metadata.test resolves to a link-local address (e.g. cloud metadata)'],
    ]);
  });

  it('forwards plain http:// requests only to allowlisted targets', async () => {
    const get = async (url: string) =>
      (await sh(driver, agent, `node -e 'const http=require("http");const p=new URL(process.env.HTTP_PROXY);http.get({host:p.hostname,port:p.port,path:process.argv[1]},r=>{let b="";r.on("data",d=>b+=d);r.on("end",()=>console.log(r.statusCode+" "+b.trim()))}).on("error",e=>console.log("error "+e.message))' ${url}`)).stdout.trim();
    expect(await get(`http://${lanAddress}:${targetPort}/`)).toBe('200 target reached');
    expect(await get(`http://${lanAddress}:${closedPort}/`)).toMatch(/^403 agent-vm egress relay: .* not in egress\.allow$/);
  });

  it('removes its firewall chain with the network', async () => {
    const other = agentId('netgone');
    await driver.ensure(spec(other, { network: { mode: 'internal', hostPorts: [OPEN_PORT] } }));
    const chains = () => execFileSync('iptables', ['-w', '5', '-S'], { encoding: 'utf8' });
    // Its own chain, by name: other test files create and destroy networks at the same time, so
    // a count of every AVM- chain on the host is not this network's.
    const ours = `-N ${chainFor(bridgeName('agentvm', other))}`;
    const before = chains().split('\n').filter((l) => l.startsWith('-N AVM-'));
    expect(before).toContain(ours);
    await driver.destroy(other);
    const after = chains().split('\n').filter((l) => l.startsWith('-N AVM-'));
    expect(after).not.toContain(ours);
    expect(chainFor('x')).toMatch(/^AVM-[0-9a-f]{16}$/);
  });
});

describe('egress policy', () => {
  it('parses targets and refuses loopback, link-local, unspecified and multicast addresses', () => {
    expect(parseTarget('Api.GitHub.com:443')).toEqual({ host: 'api.github.com', port: 443 });
    expect(parseTarget('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseTarget('nohost')).toBeUndefined();
    expect(parseTarget('a:70000')).toBeUndefined();
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', '169.254.169.254', 'fe80::1', '0.0.0.0', '::', '224.0.0.1', 'ff02::1']) {
      expect(forbiddenAddress(a), a).toBeDefined();
    }
    for (const a of ['10.0.0.5', '192.0.2.2', '140.82.112.3', '2606:4700::1111']) expect(forbiddenAddress(a), a).toBeUndefined();
  });
});
