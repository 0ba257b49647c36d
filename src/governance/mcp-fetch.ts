/**
 * The `fetch` the MCP proxy's clients use to reach a remote tool server (Streamable HTTP): plain
 * node:http / node:https on keep-alive connections, with every response body bounded.
 *
 * Why not the global fetch: a tool server's answer is hostile input, and `response.json()` on the
 * global fetch reads a body of any size into memory; here a body past `maxBytes` fails the call
 * (the connection is dropped). And it is the proxy's hot path: the global fetch (undici's WHATWG
 * layer) costs about 0.35 ms more per request than node:http on this project's machines, as much
 * as a third of what the proxy adds to a call.
 *
 * What it keeps of fetch: the status, the headers, a streamed body (an SSE answer is read as it
 * arrives, bounded in total), abort through `init.signal`. What it leaves out: redirects are never
 * followed here. A 3xx comes back as it is, as with `redirect: 'manual'`, which is what the SDK
 * asks for: its transport follows a redirect itself, within the origin, by calling this again
 * (`redirect: 'error'` fails instead). Only string bodies are sent (the SDK sends JSON text).
 */
import http from 'node:http';
import https from 'node:https';
import { Readable, Transform } from 'node:stream';
import { urlToHttpOptions } from 'node:url';

export interface UpstreamFetchOptions {
  /** Longest response body accepted; a longer one fails the request. */
  maxBytes: number;
}

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export class ResponseTooLargeError extends Error {
  constructor(maxBytes: number) {
    super(`the tool server's response is larger than ${maxBytes} bytes`);
    this.name = 'ResponseTooLargeError';
  }
}

/** A tool server's answer as node:http gave it: a whole body, or (an event stream) a bounded stream. */
export interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  /** A whole answer (anything but text/event-stream), read in full within the bound. */
  body?: Buffer;
  /** An event stream, passed on as it arrives; it fails (ResponseTooLargeError) past the bound. */
  stream?: Readable;
}

export interface RawRequest {
  method: string;
  headers: Record<string, string>;
  body?: Buffer;
  signal?: AbortSignal;
  /** A redirect fails the request instead of coming back as it is. */
  refuseRedirects?: boolean;
}

export interface UpstreamFetch {
  fetch: FetchLike;
  /** The same request without the WHATWG wrapping (the proxy's lean tools/call, mcp-call.ts). */
  request(url: URL, init: RawRequest): Promise<RawAnswer>;
  close(): void;
}

/** One fetch per upstream: its own keep-alive agents, closed with `close()`. */
export function createUpstreamFetch(o: UpstreamFetchOptions): UpstreamFetch {
  const agents = { 'http:': new http.Agent({ keepAlive: true, maxSockets: 16 }), 'https:': new https.Agent({ keepAlive: true, maxSockets: 16 }) };

  /** http.request's options for a URL (what it derives from a URL itself), worked out once per URL object: an upstream keeps its own. */
  const targets = new WeakMap<URL, http.RequestOptions>();
  function target(url: URL): http.RequestOptions {
    let t = targets.get(url);
    if (!t) targets.set(url, (t = urlToHttpOptions(url)));
    return t;
  }

  function request(url: URL, init: RawRequest): Promise<RawAnswer> {
    const agent = agents[url.protocol as keyof typeof agents];
    if (!agent) return Promise.reject(new TypeError(`unsupported protocol ${url.protocol}`));
    const headers = init.body ? { ...init.headers, 'content-length': String(init.body.length) } : init.headers;
    const signal = init.signal;
    return new Promise<RawAnswer>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new DOMException('aborted', 'AbortError'));
      const lib = url.protocol === 'https:' ? https : http;
      const req = lib.request({ ...target(url), method: init.method, headers, agent }, (res) => {
        const status = res.statusCode ?? 502;
        if (init.refuseRedirects && status >= 300 && status < 400 && res.headers.location) {
          res.resume();
          return reject(new TypeError(`the tool server redirected (${status}) and redirects were refused`));
        }
        const base = { status, headers: res.headers, rawHeaders: res.rawHeaders };
        if (status === 204 || status === 304 || init.method === 'HEAD') {
          res.resume();
          return resolve({ ...base, body: Buffer.alloc(0) });
        }
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > o.maxBytes) {
          res.destroy();
          return reject(new ResponseTooLargeError(o.maxBytes));
        }
        if (!String(res.headers['content-type'] ?? '').includes('text/event-stream')) {
          // A whole answer (JSON): read it, bounded, then hand it over in one piece.
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > o.maxBytes) {
              res.destroy();
              reject(new ResponseTooLargeError(o.maxBytes));
              return;
            }
            chunks.push(c);
          });
          res.once('end', () => resolve({ ...base, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) }));
          res.once('error', reject);
          return;
        }
        // A stream of events: passed on as it arrives, failing once it passes the bound.
        let size = 0;
        const bounded = new Transform({
          transform(chunk: Buffer, _enc, done) {
            size += chunk.length;
            done(size > o.maxBytes ? new ResponseTooLargeError(o.maxBytes) : null, chunk);
          },
        });
        res.once('error', (err) => bounded.destroy(err));
        bounded.once('error', () => res.destroy());
        res.pipe(bounded);
        resolve({ ...base, stream: bounded });
      });
      req.once('error', reject);
      if (signal) {
        // As http.request's own `signal` option does (abort destroys the request, and with it a
        // response still being read), for a third of its cost per request.
        const onAbort = () => req.destroy(signal.reason ?? new DOMException('aborted', 'AbortError'));
        signal.addEventListener('abort', onAbort, { once: true });
        req.once('close', () => signal.removeEventListener('abort', onAbort));
      }
      req.end(init.body);
    });
  }

  const fetchLike: FetchLike = async (input, init = {}) => {
    if (input instanceof Request || (init.body !== undefined && init.body !== null && typeof init.body !== 'string')) return fetch(input, init);
    const url = new URL(String(input));
    if (!(url.protocol in agents)) return fetch(input, init);
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((v, k) => (headers[k] = v));
    const answer = await request(url, {
      method: init.method ?? 'GET',
      headers,
      ...(typeof init.body === 'string' ? { body: Buffer.from(init.body) } : {}),
      ...(init.signal ? { signal: init.signal } : {}),
      refuseRedirects: init.redirect === 'error',
    });
    // What the server sent may not fit a Response (a status or header the WHATWG classes refuse):
    // that throws here, inside this promise, so the call fails and nothing escapes an event handler.
    const out = new Headers();
    for (let i = 0; i < answer.rawHeaders.length; i += 2) out.append(answer.rawHeaders[i]!, answer.rawHeaders[i + 1]!);
    const noBody = answer.status === 204 || answer.status === 304 || init.method === 'HEAD';
    if (answer.stream) {
      const stream = answer.stream;
      try {
        return new Response(Readable.toWeb(stream) as ReadableStream<Uint8Array>, { status: answer.status, headers: out });
      } catch (err) {
        stream.destroy(err as Error); // and with it the connection
        throw err;
      }
    }
    return new Response(noBody ? null : answer.body!, { status: answer.status, headers: out });
  };

  return {
    fetch: fetchLike,
    request,
    close() {
      agents['http:'].destroy();
      agents['https:'].destroy();
    },
  };
}
