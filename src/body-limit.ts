/**
 * Request bodies are bounded before anyone looks at them: every endpoint is reachable without
 * credentials (a signature or token is checked *after* the body is read, since it covers the
 * body), so an unbounded read would let anyone make the process buffer gigabytes.
 *
 * `limitBody` reads the body itself with a byte counter, chunk by chunk, whatever
 * `Content-Length` or `Transfer-Encoding` say, and stops at the limit: nothing past the first
 * chunk that crosses it is read, and the refusal asks the HTTP server to close the connection
 * (`Connection: close`) so the unread rest is never drained. Within the limit the body is held
 * in memory once and handed on as an ordinary `Request` body.
 *
 * Behind the Node HTTP server (@hono/node-server puts the `IncomingMessage` in `c.env.incoming`)
 * a body with a declared length is read from the Node stream itself, with the same counter, and
 * handed on through Hono's body cache (`withBody`): the Web stream and `Request` the server would
 * otherwise build for it cost more CPU than the rest of a webhook's handling, which shows when a
 * burst of webhooks arrives at once.
 *
 * Deliberately left out: streaming bodies past the limit to a handler. Nothing here needs it,
 * and every handler then sees a body that is complete and small.
 */
import type { IncomingMessage } from 'node:http';
import type { HonoRequest, MiddlewareHandler } from 'hono';
import { AgentVmError } from './errors.js';

/** The default ceiling for any request body: platform webhooks are a few KiB, `/v1/messages` under 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** Requests already read by a `limitBody` at or below a given limit, so nested limits read once. */
const bounded = new WeakMap<Request, number>();

function tooLarge(maxBytes: number): AgentVmError {
  return new AgentVmError('payload_too_large', `the request body is over the ${maxBytes}-byte limit; nothing past the limit was read`, { status: 413 });
}

/**
 * Middleware: refuses (413, `payload_too_large`) a body over `maxBytes`, reading at most the
 * chunk that crosses it. Requests without a body pass untouched.
 */
export function limitBody(maxBytes: number = DEFAULT_MAX_BODY_BYTES): MiddlewareHandler {
  return async function limitBody(c, next) {
    const raw = c.req.raw;
    const seen = bounded.get(raw);
    if (seen !== undefined && seen <= maxBytes) return next();
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    // `raw.body` behind the Node server builds a Web stream: not even asked for when the Node
    // request says there is no body.
    if (incoming && typeof incoming.on === 'function' ? raw.method === 'GET' || raw.method === 'HEAD' : !raw.body) return next();
    const declared = raw.headers.get('content-length');
    if (declared !== null && /^\d+$/.test(declared) && Number(declared) > maxBytes) {
      c.header('Connection', 'close');
      throw tooLarge(maxBytes);
    }
    // Only with a declared length (at most the limit, checked above): Node's parser delivers no
    // more than that, so this read ends by itself. Chunked bodies take the counted Web stream below.
    if (declared !== null && incoming && typeof incoming.on === 'function' && !incoming.readableDidRead && !incoming.readableEnded) {
      const body = await readIncoming(incoming, maxBytes);
      if (body === 'too_large') {
        c.header('Connection', 'close');
        throw tooLarge(maxBytes);
      }
      c.req.raw = withBody(c.req, raw, body);
      bounded.set(c.req.raw, maxBytes);
      return next();
    }
    if (!raw.body) return next();
    const reader = raw.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        // Not reader.cancel(): that destroys the socket before the 413 can be written. The
        // reader stays unread (TCP backpressure holds the client), and `Connection: close`
        // makes the server drop the connection once the answer is out, without draining it.
        reader.releaseLock();
        c.header('Connection', 'close');
        throw tooLarge(maxBytes);
      }
      chunks.push(value);
    }
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const next_ = new Request(raw, { body });
    bounded.set(next_, maxBytes);
    c.req.raw = next_;
    await next();
  };
}

/** What a Request's body is read through; everything else of the request is left as it was. */
const BODY_MEMBERS = new Set<PropertyKey>(['body', 'bodyUsed', 'text', 'json', 'arrayBuffer', 'blob', 'bytes', 'formData', 'clone']);

/**
 * Hands a body read from the Node request on to the handler without building a new `Request`
 * (measured: a third of a Slack webhook's handling in a burst, for headers and a Web stream
 * nobody reads). Hono's `c.req.text()` / `json()` / `arrayBuffer()` are answered from its body
 * cache; anything that reads the raw request's body directly gets a `Request` built then, with
 * the same bytes (the Node stream itself is spent).
 */
function withBody(req: HonoRequest, raw: Request, body: Buffer): Request {
  const bytes = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  // Hono answers a body read from this cache (its `bodyCache`), converting from the first entry.
  const cache = req.bodyCache as Record<string, Promise<unknown>>;
  cache.arrayBuffer = Promise.resolve(bytes);
  cache.text = Promise.resolve(body.toString('utf8'));
  let built: Request | undefined;
  return new Proxy(raw, {
    get(target, key) {
      const from = BODY_MEMBERS.has(key) ? (built ??= new Request(target.url, { method: target.method, headers: target.headers, body })) : target;
      const value: unknown = Reflect.get(from, key, from);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(from) : value;
    },
  });
}

/**
 * The body of a Node request, read with a byte counter: 'too_large' as soon as it passes
 * `maxBytes` (the stream is paused there; nothing more is read). A failed or aborted read rejects.
 */
function readIncoming(incoming: IncomingMessage, maxBytes: number): Promise<Buffer | 'too_large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const done = () => {
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onError);
      incoming.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) {
        done();
        incoming.pause();
        resolve('too_large');
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      if (incoming.readableEnded) return onEnd();
      done();
      reject(new AgentVmError('request_aborted', 'the client closed the connection before the body was complete', { status: 400 }));
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onError);
    incoming.on('close', onClose);
  });
}
