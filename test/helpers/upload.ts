/**
 * A hostile upload through a real HTTP server: a chunked body of any size, written as fast as the
 * server takes it, and a count of the bytes the server actually read off each connection.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';

export interface Served {
  url: string;
  /** Bytes read off the wire by the server, per connection, in accept order (headers included). */
  bytesRead(): number[];
  close(): Promise<void>;
}

/** Serves `app` with @hono/node-server, as `agent-vm up` does, on a free port of 127.0.0.1. */
export async function serveApp(app: Hono): Promise<Served> {
  const sockets: Socket[] = [];
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as http.Server;
  server.on('connection', (s: Socket) => sockets.push(s));
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytesRead: () => sockets.map((s) => s.bytesRead),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface UploadResult {
  status: number | undefined;
  body: string;
  /** Bytes of body the client managed to hand to its socket before the server answered or hung up. */
  sent: number;
}

/**
 * POSTs `totalBytes` in `chunkBytes`-sized writes with `Transfer-Encoding: chunked` (no
 * Content-Length; or, with `declared`, an honest Content-Length), respecting backpressure, and stops writing once the server answers or closes.
 * Resolves with the answer, if one came.
 */
export function chunkedUpload(
  url: string,
  o: { totalBytes: number; chunkBytes?: number; headers?: Record<string, string>; timeoutMs?: number; /** Send Content-Length: totalBytes instead of chunked. */ declared?: boolean },
): Promise<UploadResult> {
  const chunk = Buffer.alloc(o.chunkBytes ?? 64 * 1024, 0x61);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let stopped = false;
    let status: number | undefined;
    let body = '';
    // A connection of its own (no keep-alive agent), so the server's count is this upload's.
    const framing = o.declared ? { 'content-length': String(o.totalBytes) } : { 'transfer-encoding': 'chunked' };
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...framing, ...o.headers } });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`upload to ${url} still running after ${o.timeoutMs ?? 30_000} ms (sent ${sent} bytes)`));
    }, o.timeoutMs ?? 30_000);
    const done = () => {
      clearTimeout(timer);
      stopped = true;
      resolve({ status, body, sent });
    };
    req.on('response', (res) => {
      status = res.statusCode;
      stopped = true;
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        req.destroy();
        done();
      });
      res.on('error', done);
    });
    // A server that hangs up mid-upload: the answer (if any) was already read.
    req.on('error', () => (status === undefined ? done() : undefined));
    const pump = () => {
      while (!stopped && sent < o.totalBytes) {
        const n = Math.min(chunk.length, o.totalBytes - sent);
        sent += n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          req.once('drain', pump);
          return;
        }
      }
      if (!stopped) req.end();
    };
    pump();
  });
}
