/**
 * The proxy's HTTP face: `POST /mcp`, Streamable HTTP in stateless mode (a fresh low-level SDK
 * `Server` + transport per request, JSON responses), after a bearer-token check. Tool decisions
 * are not made here: `list` and `call` are the proxy's.
 *
 * Cancellation works without sessions: a `notifications/cancelled` arriving (in any later POST)
 * with the same token aborts that token's in-flight `tools/call` of that request id, and so does a
 * client that hangs up before its answer. An agent can cancel only its own calls.
 *
 * Deliberately left out: GET (standalone SSE) and DELETE (sessions): there are no MCP sessions.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, SUPPORTED_PROTOCOL_VERSIONS, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError, describeError } from '../errors.js';
import type { Logger } from '../log.js';

export interface McpHttpHandlers<B extends object> {
  /** The binding for a bearer token, or undefined (missing, unknown, expired): the request gets 401. */
  authenticate(token: string | undefined, req: http.IncomingMessage): B | undefined;
  list(binding: B): Promise<{ tools: Tool[] }>;
  /** `signal` aborts when the request is cancelled (notifications/cancelled) or its client hangs up. */
  call(binding: B, name: unknown, args: unknown, signal: AbortSignal): Promise<CallToolResult>;
}

export interface McpHttpServer {
  url: string;
  close(): Promise<void>;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function readBody(req: http.IncomingMessage, maxBody: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBody) {
        reject(new AgentVmError('body_too_large', `request body over ${maxBody} bytes`, { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new AgentVmError('body_invalid', 'request body is not JSON', { status: 400 }));
      }
    });
    req.on('error', reject);
  });
}

type RpcId = string | number;
const idKey = (id: RpcId) => `${typeof id}:${String(id)}`;

/** JSON-RPC messages of a body (one, or a batch), as loosely typed records. */
function messagesOf(body: unknown): Array<{ id?: unknown; method?: unknown; params?: unknown }> {
  const list = Array.isArray(body) ? body : [body];
  return list.filter((m): m is { id?: unknown; method?: unknown; params?: unknown } => m !== null && typeof m === 'object' && !Array.isArray(m));
}

const isRpcId = (v: unknown): v is RpcId => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * A body that is exactly one well-formed `tools/call` with headers the SDK's transport would
 * accept: the hot path, answered here without building an SDK Server and transport (they cost
 * about a millisecond per call). Anything else (lists, batches, notifications, odd headers,
 * malformed params) goes through the SDK, which answers it as the protocol says.
 */
function plainToolCall(req: http.IncomingMessage, body: unknown): { id: RpcId; name: string; args: Record<string, unknown> | undefined } | undefined {
  if (!isRecord(body) || body.jsonrpc !== '2.0' || body.method !== 'tools/call' || !isRpcId(body.id)) return undefined;
  const params = body.params;
  if (!isRecord(params) || typeof params.name !== 'string') return undefined;
  if (params.arguments !== undefined && !isRecord(params.arguments)) return undefined;
  if (params.task !== undefined) return undefined;
  const accept = req.headers.accept ?? '';
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) return undefined;
  if ((req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase() !== 'application/json') return undefined;
  const version = req.headers['mcp-protocol-version'];
  if (version !== undefined && (typeof version !== 'string' || !SUPPORTED_PROTOCOL_VERSIONS.includes(version))) return undefined;
  if (req.headers['mcp-session-id'] !== undefined) return undefined;
  return { id: body.id, name: params.name, args: params.arguments as Record<string, unknown> | undefined };
}

/** A handler's failure as the SDK's protocol layer renders it. */
function rpcErrorOf(err: unknown): { code: number; message: string; data?: unknown } {
  const e = err as { code?: unknown; message?: unknown; data?: unknown } | null;
  const code = typeof e?.code === 'number' && Number.isSafeInteger(e.code) ? e.code : ErrorCode.InternalError;
  const message = typeof e?.message === 'string' ? e.message : 'Internal error';
  return { code, message, ...(e?.data !== undefined ? { data: e.data } : {}) };
}

export async function startMcpHttpServer<B extends object>(
  listen: { host: string; port: number },
  handlers: McpHttpHandlers<B>,
  opts: { maxBodyBytes: number; logger: Logger },
): Promise<McpHttpServer> {
  const log = opts.logger;
  // One validator for every per-request Server: building an Ajv instance per request costs ms.
  const validator = new AjvJsonSchemaValidator();
  /** In-flight tools/call per binding, by request id: what a cancellation aborts. */
  const inflight = new WeakMap<B, Map<string, AbortController>>();

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/mcp') return sendJson(res, 404, { error: 'not found' });
    const auth = req.headers.authorization;
    const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7).trim() : undefined;
    const binding = handlers.authenticate(token || undefined, req);
    if (binding === undefined) {
      res.setHeader('www-authenticate', 'Bearer');
      return sendJson(res, 401, { jsonrpc: '2.0', error: { code: -32001, message: 'unauthorized' }, id: null });
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return sendJson(res, 405, { jsonrpc: '2.0', error: { code: -32000, message: 'method not allowed' }, id: null });
    }
    let body: unknown;
    try {
      body = await readBody(req, opts.maxBodyBytes);
    } catch (err) {
      const status = err instanceof AgentVmError ? err.status : 400;
      return sendJson(res, status, { jsonrpc: '2.0', error: { code: -32700, message: describeError(err) }, id: null });
    }
    const mine = inflight.get(binding) ?? new Map<string, AbortController>();
    inflight.set(binding, mine);
    const started: string[] = [];
    for (const m of messagesOf(body)) {
      if (m.method === 'notifications/cancelled') {
        const rid = (m.params as { requestId?: unknown } | undefined)?.requestId;
        if (isRpcId(rid)) mine.get(idKey(rid))?.abort(new Error('cancelled by the client'));
      } else if (m.method === 'tools/call' && isRpcId(m.id) && !mine.has(idKey(m.id))) {
        mine.set(idKey(m.id), new AbortController());
        started.push(idKey(m.id));
      }
    }
    res.on('close', () => {
      for (const k of started) {
        // A client that hung up before its answer has given up on the call.
        if (!res.writableFinished) mine.get(k)?.abort(new Error('the client went away'));
        mine.delete(k);
      }
    });
    const plain = plainToolCall(req, body);
    // A repeated id still in flight is left to the SDK path below, as before.
    const own = plain && started.includes(idKey(plain.id)) ? mine.get(idKey(plain.id)) : undefined;
    if (plain && own) {
      let reply: object;
      try {
        reply = { jsonrpc: '2.0', id: plain.id, result: await handlers.call(binding, plain.name, plain.args, own.signal) };
      } catch (err) {
        reply = { jsonrpc: '2.0', id: plain.id, error: rpcErrorOf(err) };
      }
      return sendJson(res, 200, reply);
    }
    const server = new Server(
      { name: 'agent-vm', version: '1.0.0' },
      { capabilities: { tools: { listChanged: false } }, jsonSchemaValidator: validator },
    );
    server.setRequestHandler(ListToolsRequestSchema, () => handlers.list(binding));
    server.setRequestHandler(CallToolRequestSchema, (r, extra) => {
      const own = mine.get(idKey(extra.requestId))?.signal;
      return handlers.call(binding, r.params.name, r.params.arguments, own ? AbortSignal.any([extra.signal, own]) : extra.signal);
    });
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close().catch(() => undefined);
      void server.close().catch(() => undefined);
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  }

  const httpServer = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err: describeError(err) }, 'MCP request failed');
      sendJson(res, 500, { jsonrpc: '2.0', error: { code: -32603, message: 'internal error' }, id: null });
    });
  });
  httpServer.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(listen.port, listen.host, () => {
      httpServer.off('error', reject);
      resolve();
    });
  });
  const port = (httpServer.address() as AddressInfo).port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}/mcp`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        httpServer.close(() => resolve());
        httpServer.closeAllConnections();
      });
      return closing;
    },
  };
}
