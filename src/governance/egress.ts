/**
 * The egress relay: the only way out of a sandbox. A profile's `egress.allow` lists exact
 * `host:port` pairs; the sandbox's internal network has no route out, and its HTTP(S)_PROXY points
 * here, on the host's address on that network. The relay:
 *   - tunnels `CONNECT host:port` (HTTPS and anything else over TCP) and forwards plain
 *     `http://` requests, only to an allowlisted `host:port`, matched exactly (lowercase host);
 *   - resolves the name itself and refuses loopback, link-local (cloud metadata), unspecified and
 *     multicast addresses, whatever the allowlist says, so a name cannot be pointed back at the
 *     gateway host or the metadata service;
 *   - answers everything else 403 and never opens a connection for it;
 *   - writes one audit row per attempt (`egress.connect`, allow or deny, with the reason).
 *
 * Deliberately left out: credential injection (secrets stay in MCP upstreams for now), byte
 * quotas, and TLS interception; the relay sees host names and ports, never payloads.
 */
import { lookup } from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { AuditEntry } from './audit.js';

export interface EgressRelayOptions {
  profile: string;
  /** `host:port`, as validated by the manifest schema. */
  allow: readonly string[];
  listen: { host: string; port: number };
  /** Writes one audit row; failures are logged, never turned into an allow. */
  record: (entry: AuditEntry) => Promise<void> | void;
  logger: Logger;
  /** Name resolution (tests inject one). Default: the system resolver, every address. */
  resolve?: (host: string) => Promise<string[]>;
  connectTimeoutMs?: number;
  /** Counts each attempt's decision. */
  metrics?: Metrics;
}

export interface EgressRelay {
  /** `http://host:port` as the sandbox should use it. */
  readonly url: string;
  close(): Promise<void>;
}

export type EgressVerdict = { ok: true; address: string; port: number } | { ok: false; reason: string };

/** Addresses the relay never connects to, whatever the allowlist says. */
export function forbiddenAddress(address: string): string | undefined {
  const v4 = net.isIPv4(address) ? address : /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (v4) {
    const [a, b] = v4.split('.').map(Number) as [number, number];
    if (a === 127) return 'loopback address';
    if (a === 0) return 'unspecified address';
    if (a === 169 && b === 254) return 'link-local address (e.g. cloud metadata)';
    if (a >= 224) return 'multicast or reserved address';
    return undefined;
  }
  const x = address.toLowerCase();
  if (x === '::1') return 'loopback address';
  if (x === '::') return 'unspecified address';
  if (/^fe[89ab]/.test(x)) return 'link-local address';
  if (x.startsWith('ff')) return 'multicast address';
  return undefined;
}

/** Splits `host:port` / `[v6]:port`; undefined when it is not a valid target. */
export function parseTarget(target: string): { host: string; port: number } | undefined {
  const m = /^\[?([^\[\]]+?)\]?:(\d{1,5})$/.exec(target.trim());
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!.toLowerCase().replace(/\.$/, ''), port };
}

export async function createEgressRelay(o: EgressRelayOptions): Promise<EgressRelay> {
  const allow = new Set(o.allow.map((a) => a.toLowerCase()));
  const resolve = o.resolve ?? (async (host: string) => (await lookup(host, { all: true, verbatim: true })).map((r) => r.address));
  const connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
  const log = o.logger.child({ component: 'egress', profile: o.profile });
  /** Open tunnels: CONNECT sockets leave the HTTP server's bookkeeping, so close() ends them here. */
  const tunnels = new Set<Duplex>();

  function audit(target: string, verdict: EgressVerdict, via: 'connect' | 'http'): void {
    o.metrics?.egress(o.profile, verdict.ok ? 'allow' : 'deny');
    const entry: AuditEntry = {
      profile: o.profile,
      action: 'egress.connect',
      decision: verdict.ok ? 'allow' : 'deny',
      reason: verdict.ok ? null : verdict.reason,
      subject: target.slice(0, 300),
      data: { via, ...(verdict.ok ? { address: verdict.address } : {}) },
    };
    Promise.resolve()
      .then(() => o.record(entry))
      .catch((err: unknown) => log.warn({ err }, 'could not write the egress audit row'));
  }

  async function decide(target: string): Promise<EgressVerdict> {
    const t = parseTarget(target);
    if (!t) return { ok: false, reason: 'not a host:port target' };
    if (!allow.has(`${t.host}:${t.port}`)) return { ok: false, reason: 'not in egress.allow' };
    let addresses: string[];
    try {
      addresses = net.isIP(t.host) ? [t.host] : await resolve(t.host);
    } catch {
      return { ok: false, reason: 'name did not resolve' };
    }
    if (addresses.length === 0) return { ok: false, reason: 'name did not resolve' };
    // Every address must be acceptable: a name with one bad answer is refused outright.
    for (const a of addresses) {
      const bad = forbiddenAddress(a);
      if (bad) return { ok: false, reason: `${t.host} resolves to a ${bad}` };
    }
    return { ok: true, address: addresses[0]!, port: t.port };
  }

  function refuse(socket: Duplex, status: number, reason: string): void {
    const body = `agent-vm egress relay: ${reason}\n`;
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  }

  const server = http.createServer((req, res) => {
    // Plain http:// through the proxy: absolute-form request line.
    let url: URL;
    try {
      url = new URL(req.url ?? '');
      if (url.protocol !== 'http:') throw new Error('not http');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('agent-vm egress relay: send an absolute http:// URL, or CONNECT host:port for anything else\n');
      return;
    }
    const target = `${url.hostname}:${url.port || '80'}`;
    void decide(target).then((verdict) => {
      audit(target, verdict, 'http');
      if (!verdict.ok) {
        res.writeHead(403, { 'content-type': 'text/plain' }).end(`agent-vm egress relay: ${target} refused: ${verdict.reason}\n`);
        return;
      }
      const headers = { ...req.headers };
      delete headers['proxy-authorization'];
      delete headers['proxy-connection'];
      const upstream = http.request(
        { host: verdict.address, port: verdict.port, method: req.method, path: `${url.pathname}${url.search}`, headers, timeout: connectTimeoutMs },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      upstream.on('timeout', () => upstream.destroy(new Error('upstream timed out')));
      upstream.on('error', (err) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`agent-vm egress relay: ${target} failed: ${err.message}\n`);
        else res.destroy();
      });
      req.pipe(upstream);
    });
  });

  server.on('connect', (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
    const target = req.url ?? '';
    client.on('error', () => undefined);
    void decide(target).then((verdict) => {
      audit(target, verdict, 'connect');
      if (!verdict.ok) return refuse(client, 403, `${target} refused: ${verdict.reason}`);
      const upstream = net.connect({ host: verdict.address, port: verdict.port });
      tunnels.add(upstream);
      tunnels.add(client);
      let established = false;
      const timer = setTimeout(() => upstream.destroy(new Error('connect timed out')), connectTimeoutMs);
      upstream.once('connect', () => {
        established = true;
        clearTimeout(timer);
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length > 0) upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on('error', (err) => {
        clearTimeout(timer);
        if (!established) refuse(client, 502, `${target} failed: ${err.message}`);
        else client.destroy();
      });
      upstream.on('close', () => {
        tunnels.delete(upstream);
        if (established) client.destroy();
      });
      client.on('close', () => {
        tunnels.delete(client);
        upstream.destroy();
      });
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(o.listen.port, o.listen.host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ url, allow: [...allow] }, 'egress relay listening');
  return {
    url,
    async close() {
      for (const t of tunnels) t.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
