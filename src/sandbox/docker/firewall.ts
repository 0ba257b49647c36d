/**
 * The host side of an agent's internal network. Docker's `--internal` stops traffic from leaving
 * the bridge for other networks, but the host itself still answers on every address it has
 * (measured here: a sandbox reached a host service on 0.0.0.0 through its own gateway address,
 * docker0 and eth0). So each agent's bridge gets its own iptables chain on INPUT that accepts only
 * TCP to the host address on the ports the spec names (the gateway's MCP endpoint and egress
 * relay) plus replies, and refuses everything else, DNS (port 53) first of all.
 *
 * Fails closed: if the rules cannot be installed, the sandbox is not started.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { AgentVmError } from '../../errors.js';
import type { SandboxSpec } from '../types.js';

const run = promisify(execFile);

/** One chain per bridge; iptables chain names are at most 28 characters. */
export function chainFor(bridge: string): string {
  return `AVM-${createHash('sha256').update(bridge).digest('hex').slice(0, 16)}`;
}

function unavailable(command: string): AgentVmError {
  return new AgentVmError('firewall_unavailable', `${command} is not installed; agent-vm needs iptables to close the host to sandboxes on an internal network`, { status: 500 });
}

async function iptables(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout } = await run('iptables', ['-w', '5', ...args], { timeout: 15_000 });
    return { ok: true, stdout, stderr: '' };
  } catch (err) {
    const e = err as { stderr?: string; code?: string | number; message?: string };
    if (e.code === 'ENOENT') throw unavailable('iptables');
    return { ok: false, stdout: '', stderr: (e.stderr ?? e.message ?? '').trim() };
  }
}

async function must(args: string[], what: string): Promise<void> {
  const r = await iptables(args);
  if (!r.ok) {
    throw new AgentVmError('firewall_failed', `could not ${what} (iptables ${args.join(' ')}: ${r.stderr || 'failed'}); agent-vm needs root or CAP_NET_ADMIN`, { status: 500 });
  }
}

/** The chain's rules, in `iptables -S` form. */
function rulesFor(chain: string, hostAddress: string, ports: readonly number[]): string[] {
  return [
    `-A ${chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    // DNS to the host, before any accepted port: the sandbox's DNS upstream is the host address
    // (hardening.ts dnsFor), so whatever Docker's embedded resolver forwards from the sandbox's
    // namespace ends here, refused at once so a lookup fails fast. Their own rules, so their
    // counters show what was refused.
    `-A ${chain} -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable`,
    `-A ${chain} -p tcp -m tcp --dport 53 -j REJECT --reject-with tcp-reset`,
    ...[...new Set(ports)].sort((a, b) => a - b).map((p) => `-A ${chain} -d ${hostAddress}/32 -p tcp -m tcp --dport ${p} -j ACCEPT`),
    // Refused at once (a reset) rather than silently dropped, so an agent fails fast.
    `-A ${chain} -p tcp -j REJECT --reject-with tcp-reset`,
    `-A ${chain} -j DROP`,
  ];
}

/**
 * Installs (or refreshes) the rules for one bridge. Idempotent. The common case, a sandbox woken
 * again with its rules still in place, costs two `iptables` calls; otherwise the chain is
 * rewritten in one `iptables-restore` transaction (never empty in between).
 */
export async function guardBridge(bridge: string, hostAddress: string, ports: readonly number[]): Promise<void> {
  const chain = chainFor(bridge);
  const want = rulesFor(chain, hostAddress, ports);
  const [listed, jump] = await Promise.all([
    listChain(chain),
    iptables(['-C', 'INPUT', '-i', bridge, '-j', chain]),
  ]);
  if (listed !== undefined && listed.join('\n') === want.join('\n') && jump.ok) return;
  // --noflush keeps every other table and chain; a chain declared here is created or emptied.
  await restore(['*filter', `:${chain} - [0:0]`, ...want, 'COMMIT', ''].join('\n'), `install the rules of ${chain}`);
  if (!jump.ok && !(await iptables(['-C', 'INPUT', '-i', bridge, '-j', chain])).ok) {
    await must(['-I', 'INPUT', '1', '-i', bridge, '-j', chain], `send ${bridge} traffic to ${chain}`);
  }
}

/** The chain's `-A` rules, or undefined when it does not exist. */
async function listChain(chain: string): Promise<string[] | undefined> {
  const r = await iptables(['-S', chain]);
  return r.ok ? r.stdout.split('\n').filter((l) => l.startsWith('-A ')) : undefined;
}

function restore(input: string, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('iptables-restore', ['-w', '5', '--noflush'], { timeout: 15_000 }, (err, _out, stderr) => {
      if (!err) return resolve();
      const code = (err as { code?: unknown }).code;
      reject(
        code === 'ENOENT'
          ? unavailable('iptables-restore')
          : new AgentVmError('firewall_failed', `could not ${what} (iptables-restore: ${String(stderr).trim() || err.message}); agent-vm needs root or CAP_NET_ADMIN`, { status: 500 }),
      );
    });
    child.stdin?.end(input);
  });
}

/** Removes a bridge's rules (after its network is gone). Missing rules are fine. */
export async function unguardBridge(bridge: string): Promise<void> {
  const chain = chainFor(bridge);
  while ((await iptables(['-D', 'INPUT', '-i', bridge, '-j', chain])).ok) {
    // a rule inserted twice by a race is removed too
  }
  await iptables(['-F', chain]);
  await iptables(['-X', chain]);
}

/** Whether a bridge's chain is still installed (destroy checks it is gone). False where iptables is not installed: nothing could be. */
export async function chainInstalled(bridge: string): Promise<boolean> {
  return (await listChain(chainFor(bridge)).catch(() => undefined)) !== undefined;
}

/** Proxy settings for a sandbox whose only way out is the egress relay at `host:port`. */
export function proxyEnv(host: string, port: number): Record<string, string> {
  const url = `http://${host}:${port}`;
  return { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: host, no_proxy: host };
}

/** Host ports an internal-network sandbox may reach at its host address. */
export function hostPortsOf(spec: SandboxSpec): number[] {
  if (spec.network?.mode !== 'internal') return [];
  const ports = new Set([...(spec.network.hostPorts ?? []), ...(spec.network.proxyPort ? [spec.network.proxyPort] : [])]);
  return [...ports].sort((a, b) => a - b);
}

/** At most 15 characters (IFNAMSIZ), unique per agent and name prefix. */
export function bridgeName(prefix: string, agentId: string): string {
  return `avm${createHash('sha256').update(`${prefix}/${agentId}`).digest('hex').slice(0, 12)}`;
}
