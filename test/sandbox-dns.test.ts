/**
 * DNS from a sandbox, against real Docker with runsc. A sandbox needs no DNS: the egress relay
 * resolves names itself and the relay and MCP endpoint are addressed by IP. On an internal
 * network Docker's embedded resolver (127.0.0.11) answers the sandbox anyway and forwards every
 * name it does not know to its upstream, which the driver sets to the agent's host address; the
 * agent's firewall chain refuses port 53 there. A recording DNS server listens on port 53 of the
 * host's addresses (each agent network's host address, so exactly where the engine forwards, plus
 * docker0, eth0 and loopback), and a hostile agent tries every way to get a query to it:
 * getaddrinfo, c-ares, raw UDP and TCP to the embedded resolver and to each of those addresses.
 * None may arrive.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainFor } from '../src/sandbox/docker/firewall.js';
import type { SandboxDriver, SandboxSpec } from '../src/sandbox/types.js';
import {
  SANDBOX_DNS_PROBE, hostQuery, startDnsRecorder,
  type AttemptResult, type DnsQuery, type DnsRecorder, type SandboxAttempt,
} from './fakes/dns.js';
import { agentId } from './helpers/env.js';
import { makeDriver, sh, spec } from './helpers/sandbox.js';

const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const driver: SandboxDriver = makeDriver();
/** Every name a sandbox asks for ends in this zone; the control's names do not. */
const TAG = randomBytes(4).toString('hex');
const ZONE = `${TAG}.exfil.example`;
const PROXY_PORT = 3128;
/**
 * Under runsc the pids limit also counts gVisor's own host threads, and every network call that
 * blocks (a DNS timeout) can add one for good: measured 78 -> 125 over four probes, and a sandbox
 * at 128 dies (exit 2). 512 as in sandbox-network.test.ts.
 */
const LIMITS = { cpus: 1, memoryMiB: 256, pids: 512 };

type Kind = 'none' | 'internal' | 'proxied';
const SANDBOXES: Record<Kind, { agent: string; network: SandboxSpec['network'] }> = {
  none: { agent: agentId('dnsnone'), network: { mode: 'none' } },
  internal: { agent: agentId('dnsint'), network: { mode: 'internal' } },
  proxied: { agent: agentId('dnsproxy'), network: { mode: 'internal', proxyPort: PROXY_PORT } },
};
const hostAddressOf: Partial<Record<Kind, string>> = {};

/** A non-loopback address of this machine outside Docker (eth0 or similar). */
const lanAddress = Object.entries(os.networkInterfaces())
  .filter(([name]) => !/^(docker|br-|avm|veth)/.test(name))
  .flatMap(([, addrs]) => addrs ?? [])
  .find((a) => a.family === 'IPv4' && !a.internal)?.address;
/** Where the recorder listens and the sandboxes aim: every host address they could know of. */
let hostAddresses: string[] = [];

let recorder: DnsRecorder;

beforeAll(async () => {
  expect(lanAddress, 'this machine needs a non-loopback IPv4 address').toBeDefined();
  for (const kind of Object.keys(SANDBOXES) as Kind[]) {
    const s = SANDBOXES[kind];
    const h = await driver.ensure(spec(s.agent, { network: s.network, limits: LIMITS }));
    if (h.hostAddress) hostAddressOf[kind] = h.hostAddress;
  }
  // docker0 from the engine: Node lists only interfaces that are up, and docker0 is down when empty.
  const bridge = (await docker.getNetwork('bridge').inspect()) as { IPAM?: { Config?: Array<{ Gateway?: string }> } };
  const docker0 = bridge.IPAM?.Config?.find((c) => c.Gateway)?.Gateway;
  // Each agent network's host address (where the engine forwards), docker0, eth0 and loopback.
  hostAddresses = [...new Set([...Object.values(hostAddressOf), docker0, lanAddress!].filter((a): a is string => a !== undefined))];
  try {
    recorder = await startDnsRecorder([...hostAddresses, '127.0.0.1'], 53);
  } catch (err) {
    throw new Error(`the recording DNS server needs port 53 on ${hostAddresses.join(', ')} and 127.0.0.1 (root, and no other run of this file): ${String(err)}`);
  }
}, 120_000);

afterAll(async () => {
  await recorder?.close();
  for (const s of Object.values(SANDBOXES)) await driver.destroy(s.agent).catch(() => undefined);
  await driver.close();
});

/** The queries the recorder got whose name ends in `zone`. */
function recorded(zone: string): DnsQuery[] {
  return recorder.queries.filter((q) => q.name.endsWith(`.${zone}`));
}

async function probe(kind: Kind, attempts: SandboxAttempt[]): Promise<AttemptResult[]> {
  const quoted = (s: string) => `'${s.replace(/'/g, `'"'"'`)}'`;
  const r = await sh(driver, SANDBOXES[kind].agent, `node -e ${quoted(SANDBOX_DNS_PROBE)} ${quoted(JSON.stringify(attempts))}`, 30_000);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim()) as AttemptResult[];
}

/**
 * What the embedded resolver says to a name it could not forward: nothing (Docker 20.10 drops the
 * query when no upstream answered) or SERVFAIL (later engines). NXDOMAIN would be the recorder's
 * answer, i.e. a query that got out.
 */
const NO_UPSTREAM = /^(timeout|answer rcode 2 an 0)$/;

/** A query the engine forwards leaves within milliseconds of the sandbox's; a second covers a busy machine. */
const settle = () => new Promise((r) => setTimeout(r, 1_000));

function label(address: string): string {
  return address.replace(/[.:]/g, '-');
}

/** Every way a sandbox of `kind` might get a query out, each with its own name under `zone`. */
function everyAttempt(zone: string): SandboxAttempt[] {
  return [
    { kind: 'getaddrinfo', name: `gai.${zone}` },
    { kind: 'c-ares', name: `cares.${zone}` },
    ...['127.0.0.11', ...hostAddresses].flatMap((address): SandboxAttempt[] => [
      { kind: 'udp', address, name: `u-${label(address)}.${zone}` },
      { kind: 'tcp', address, name: `t-${label(address)}.${zone}` },
    ]),
  ];
}

/** The packets the agent's firewall chain refused on port 53, by protocol. */
async function dnsRefusals(kind: Kind): Promise<{ udp: number; tcp: number }> {
  const info = await docker.getContainer(`agentvm-${SANDBOXES[kind].agent}`).inspect();
  const networkId = Object.values(info.NetworkSettings.Networks)[0]!.NetworkID;
  const net = (await docker.getNetwork(networkId).inspect()) as { Options?: Record<string, string> };
  const bridge = net.Options?.['com.docker.network.bridge.name'];
  expect(bridge, 'the agent network names its bridge').toBeDefined();
  const out = execFileSync('iptables', ['-w', '5', '-L', chainFor(bridge!), '-v', '-x', '-n'], { encoding: 'utf8' });
  // `-n` prints the protocol column as a number here; the match column names it (`udp dpt:53`).
  const count = (proto: string) =>
    out.split('\n').filter((l) => l.includes(` ${proto} dpt:53 `)).reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]), 0);
  return { udp: count('udp'), tcp: count('tcp') };
}

describe('DNS from a sandbox', () => {
  it('the recorder hears a query sent from the host to its address on the agent network (negative control)', async () => {
    const address = hostAddressOf.internal!;
    const zone = `${TAG}.control.example`;
    expect(await hostQuery('udp', address, `udp.${zone}`)).toBe('answer rcode 3');
    expect(await hostQuery('tcp', address, `tcp.${zone}`)).toBe('answer rcode 3');
    expect(await hostQuery('udp', '127.0.0.1', `loopback.${zone}`)).toBe('answer rcode 3');
    expect(recorded(zone).map((q) => [q.proto, q.name]).sort()).toEqual([
      ['tcp', `tcp.${zone}`],
      ['udp', `loopback.${zone}`],
      ['udp', `udp.${zone}`],
    ]);
  });

  it('an internal sandbox\'s only DNS upstream is its own host address; a sandbox without a network has none', async () => {
    const dnsOf = async (kind: Kind) => (await docker.getContainer(`agentvm-${SANDBOXES[kind].agent}`).inspect()).HostConfig.Dns ?? [];
    expect(await dnsOf('internal')).toEqual([hostAddressOf.internal]);
    expect(await dnsOf('proxied')).toEqual([hostAddressOf.proxied]);
    expect(await dnsOf('none')).toEqual([]);
    // The sandbox asks the embedded resolver; it never learns of an upstream.
    expect((await sh(driver, SANDBOXES.internal.agent, 'cat /etc/resolv.conf')).stdout).toMatch(/^nameserver 127\.0\.0\.11$/m);
  });

  it('the engine forwards an unknown name from the sandbox\'s namespace to the host address, where the firewall refuses it', async () => {
    const zone = `fwd.${ZONE}`;
    const own = (await docker.getContainer(`agentvm-${SANDBOXES.internal.agent}`).inspect()).Name.replace(/^\//, '');
    const before = await dnsRefusals('internal');
    const results = await probe('internal', [
      { kind: 'udp', address: '127.0.0.11', name: own },
      { kind: 'udp', address: '127.0.0.11', name: `u.${zone}` },
      { kind: 'tcp', address: '127.0.0.11', name: `t.${zone}` },
    ]);
    await settle();
    const after = await dnsRefusals('internal');
    const outcomes = results.map((r) => r.outcome);
    // The resolver is live (it answers the sandbox's own name from the engine's records) ...
    expect(outcomes[0], JSON.stringify(results)).toMatch(/^answer rcode 0 an [1-9]/);
    // ... it tried its upstream for the others, over the same protocol, and got nothing back.
    for (const o of outcomes.slice(1)) expect(o, JSON.stringify(results)).toMatch(NO_UPSTREAM);
    expect(after.udp - before.udp, 'UDP queries refused at the host address').toBeGreaterThanOrEqual(1);
    expect(after.tcp - before.tcp, 'TCP connections refused at the host address').toBeGreaterThanOrEqual(1);
    expect(recorded(zone)).toEqual([]);
  });

  for (const kind of ['none', 'internal', 'proxied'] as const) {
    it(`no query from a sandbox with network ${kind === 'proxied' ? 'internal and a proxy port' : kind} reaches a resolver`, async () => {
      const zone = `${kind}.${ZONE}`;
      const results = await probe(kind, everyAttempt(zone));
      await settle();
      const detail = JSON.stringify(results, null, 1);
      expect(recorded(zone), detail).toEqual([]);
      for (const r of results) {
        const where = 'address' in r.attempt ? `${r.attempt.kind} ${r.attempt.address}` : r.attempt.kind;
        // Names never resolve; the embedded resolver (internal only) is the one thing that answers, with a failure.
        if (kind !== 'none' && 'address' in r.attempt && r.attempt.address === '127.0.0.11') {
          expect(r.outcome, where).toMatch(NO_UPSTREAM);
        } else {
          expect(r.outcome, where).toMatch(/^(error|timeout)/);
        }
      }
    }, 60_000);
  }

  it('no sandbox query reached the recorder at all', () => {
    expect(recorded(ZONE)).toEqual([]);
  });
});
