/**
 * What the fakes of platform HTTP APIs share: the record of a call, reading a request, and an
 * HTTP server on a free local port.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request a fake received, and how it answered. `File` is the fake's record of an uploaded file. */
export interface RecordedCall<File> {
  method: string;
  /** The path below the API's prefix for API calls (`/task/t1/comment`); the full path otherwise. */
  path: string;
  headers: Record<string, string>;
  /** The JSON body (or, where the API sends JSON in a multipart field, that field parsed). */
  json?: unknown;
  files: File[];
  /** The status the fake answered with. */
  status: number;
}

/** `GET /x 200, POST /y 404`: the calls, for an error message. */
export function describeCalls(calls: ReadonlyArray<Pick<RecordedCall<unknown>, 'method' | 'path' | 'status'>>): string {
  return calls.map((c) => `${c.method} ${c.path} ${c.status}`).join(', ');
}

export async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The request's headers, one string each. */
export function headersOf(req: http.IncomingMessage): Record<string, string> {
  return Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : (v ?? '')]));
}

/** Listens on a free port of 127.0.0.1; resolves to the server's origin, like `http://127.0.0.1:41234`. */
export async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Drops open connections and closes the server. */
export async function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
