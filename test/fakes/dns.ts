/**
 * A recording DNS server (UDP and TCP on one address and port) and the DNS clients the DNS tests
 * use: one on the host for the negative control, and a script that queries from inside a sandbox.
 * The server answers every question NXDOMAIN and remembers who asked what.
 */
import dgram from 'node:dgram';
import net from 'node:net';

export interface DnsQuery {
  proto: 'udp' | 'tcp';
  /** Source address of the query as the server saw it. */
  from: string;
  /** The question's name, lowercased, without the trailing dot. */
  name: string;
}

export interface DnsRecorder {
  queries: DnsQuery[];
  close(): Promise<void>;
}

/** A DNS query for `name` (type A, class IN, recursion desired). */
export function dnsQuery(name: string, id = Math.floor(Math.random() * 0xffff)): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([Buffer.byteLength(l)]), Buffer.from(l)]));
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** The first question's name in a DNS message, or undefined when it does not parse. */
export function questionName(msg: Buffer): string | undefined {
  const labels: string[] = [];
  let o = 12;
  while (o < msg.length) {
    const len = msg[o]!;
    if (len === 0) return labels.join('.').toLowerCase();
    if (len > 63 || o + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(o + 1, o + 1 + len).toString('latin1'));
    o += 1 + len;
  }
  return undefined;
}

/** The reply to `msg`: the same id and question, QR + RA set, NXDOMAIN. */
function nxdomain(msg: Buffer): Buffer {
  const r = Buffer.from(msg);
  r[2] = (r[2]! | 0x80) & 0xf9; // QR, keep opcode and RD, clear AA/TC
  r[3] = 0x80 | 3; // RA, rcode NXDOMAIN
  return r;
}

/**
 * Listens on UDP and TCP port `port` of each address in `hosts` (each its own socket, so a
 * resolver already on another address, like systemd-resolved on 127.0.0.53, is no conflict).
 * Fails (EADDRINUSE, EACCES) rather than record nothing.
 */
export async function startDnsRecorder(hosts: readonly string[], port: number): Promise<DnsRecorder> {
  const queries: DnsQuery[] = [];
  const udps: dgram.Socket[] = [];
  const tcps: net.Server[] = [];
  const sockets = new Set<net.Socket>();
  const close = async () => {
    for (const s of sockets) s.destroy();
    await Promise.all([
      ...udps.map((u) => new Promise<void>((r) => u.close(() => r()))),
      ...tcps.map((t) => new Promise<void>((r) => t.close(() => r()))),
    ]);
  };
  try {
    for (const host of hosts) {
      const udp = dgram.createSocket({ type: 'udp4', reuseAddr: false });
      udp.on('message', (msg, rinfo) => {
        const name = questionName(msg);
        if (name === undefined) return;
        queries.push({ proto: 'udp', from: rinfo.address, name });
        udp.send(nxdomain(msg), rinfo.port, rinfo.address);
      });
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, host, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      udps.push(udp);
      const tcp = net.createServer((s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => undefined);
        let buf = Buffer.alloc(0);
        s.on('data', (d) => {
          buf = Buffer.concat([buf, d]);
          while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
            const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
            buf = buf.subarray(2 + msg.length);
            const name = questionName(msg);
            if (name === undefined) continue;
            queries.push({ proto: 'tcp', from: s.remoteAddress ?? '?', name });
            const reply = nxdomain(msg);
            const len = Buffer.alloc(2);
            len.writeUInt16BE(reply.length);
            s.write(Buffer.concat([len, reply]));
          }
        });
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ port, host, exclusive: true }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      tcps.push(tcp);
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { queries, close };
}

/** One query from the host: `answer rcode N`, `timeout` or `error CODE`. */
export function hostQuery(proto: 'udp' | 'tcp', address: string, name: string, timeoutMs = 3_000): Promise<string> {
  const q = dnsQuery(name);
  return new Promise((resolve) => {
    if (proto === 'udp') {
      const s = dgram.createSocket('udp4');
      const done = (r: string) => {
        clearTimeout(t);
        s.close();
        resolve(r);
      };
      const t = setTimeout(() => done('timeout'), timeoutMs);
      s.on('error', (e: NodeJS.ErrnoException) => done(`error ${e.code}`));
      s.on('message', (m) => done(`answer rcode ${m[3]! & 15}`));
      s.send(q, 53, address);
      return;
    }
    const s = net.connect({ host: address, port: 53 });
    const done = (r: string) => {
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    const t = setTimeout(() => done('timeout'), timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => done(`error ${e.code}`));
    s.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(q.length);
      s.write(Buffer.concat([len, q]));
    });
    s.on('data', (d) => done(d.length >= 6 ? `answer rcode ${d[5]! & 15}` : 'short answer'));
  });
}

/** One lookup a sandbox tries: getaddrinfo, c-ares (resolv.conf), or a raw query to an address. */
export type SandboxAttempt =
  | { kind: 'getaddrinfo' | 'c-ares'; name: string }
  | { kind: 'udp' | 'tcp'; address: string; name: string };

export interface AttemptResult {
  attempt: SandboxAttempt;
  /** `address A.B.C.D`, `answer rcode N an M`, `timeout`, `error CODE`. */
  outcome: string;
  ms: number;
}

/**
 * Node script run inside a sandbox (`node -e SANDBOX_DNS_PROBE '<attempts JSON>'`): every attempt
 * at once, each bounded by its own deadline; prints one JSON array of AttemptResult.
 */
export const SANDBOX_DNS_PROBE = String.raw`
const dgram = require('node:dgram'), net = require('node:net'), dns = require('node:dns'), { execFile } = require('node:child_process');
const attempts = JSON.parse(process.argv[1]);
const LIMIT = 3000;
function query(name) {
  const h = Buffer.alloc(12); h.writeUInt16BE(Math.floor(Math.random() * 0xffff), 0); h.writeUInt16BE(0x0100, 2); h.writeUInt16BE(1, 4);
  const ls = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  return Buffer.concat([h, ...ls, Buffer.from([0, 0, 1, 0, 1])]);
}
function one(a) {
  return new Promise((res) => {
    // In a child: a process with a getaddrinfo in flight does not exit until glibc gives up (10 s).
    if (a.kind === 'getaddrinfo') {
      const lookup = "require('node:dns').lookup(process.argv[1], { family: 4 }, (e, addr) => console.log(e ? 'error ' + e.code : 'address ' + addr))";
      return execFile(process.execPath, ['-e', lookup, a.name], { timeout: LIMIT, killSignal: 'SIGKILL' }, (e, out) => res(out.trim() || (e && e.killed ? 'timeout' : 'error ' + (e && e.message))));
    }
    if (a.kind === 'c-ares') return new dns.Resolver({ timeout: 1000, tries: 1 }).resolve4(a.name, (e, addrs) => res(e ? 'error ' + e.code : 'address ' + addrs.join(',')));
    const q = query(a.name);
    if (a.kind === 'udp') {
      const s = dgram.createSocket('udp4');
      s.on('error', (e) => { try { s.close(); } catch {} res('error ' + e.code); });
      s.on('message', (m) => { s.close(); res('answer rcode ' + (m[3] & 15) + ' an ' + m.readUInt16BE(6)); });
      s.connect(53, a.address, (e) => { if (e) { try { s.close(); } catch {} return res('error ' + e.code); } s.send(q); });
      return;
    }
    const s = net.connect({ host: a.address, port: 53 });
    s.on('error', (e) => res('error ' + e.code));
    s.on('connect', () => { const l = Buffer.alloc(2); l.writeUInt16BE(q.length); s.write(Buffer.concat([l, q])); });
    s.on('data', (d) => { s.destroy(); res(d.length >= 10 ? 'answer rcode ' + (d[5] & 15) + ' an ' + d.readUInt16BE(8) : 'short answer'); });
  });
}
Promise.all(attempts.map((a) => {
  const t0 = Date.now();
  return Promise.race([one(a), new Promise((r) => setTimeout(() => r('timeout'), LIMIT))]).then((outcome) => ({ attempt: a, outcome, ms: Date.now() - t0 }));
})).then((r) => { process.stdout.write(JSON.stringify(r) + '\n'); process.exit(0); });
`;
