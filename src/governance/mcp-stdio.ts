/**
 * MCP's stdio framing (newline-delimited JSON-RPC) over a sandbox's attached stdio: how the proxy
 * talks to a local (`command`) tool server, which runs in a sandbox of its own and never as a
 * process on the gateway host.
 */
import { ReadBuffer, serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { SandboxStdio } from '../sandbox/types.js';

export class SandboxStdioTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private io: SandboxStdio | undefined;
  private readonly buffer = new ReadBuffer();
  private closed = false;

  /** `stderr` receives the server's diagnostics, line by line (the caller logs them, redacted). */
  constructor(
    private readonly open: () => Promise<SandboxStdio>,
    private readonly stderr?: (line: string) => void,
  ) {}

  async start(): Promise<void> {
    if (this.io) throw new Error('SandboxStdioTransport already started');
    const io = await this.open();
    this.io = io;
    io.stdout.on('data', (chunk: Buffer) => {
      try {
        this.buffer.append(chunk);
      } catch (err) {
        this.onerror?.(err as Error);
        return;
      }
      for (;;) {
        let msg: JSONRPCMessage | null;
        try {
          msg = this.buffer.readMessage();
        } catch (err) {
          // A line that is not JSON-RPC: report it and keep reading the next one.
          this.onerror?.(err as Error);
          continue;
        }
        if (msg === null) break;
        this.onmessage?.(msg);
      }
    });
    let errBuf = '';
    io.stderr.on('data', (d: Buffer) => {
      errBuf += d.toString('utf8');
      let i;
      while ((i = errBuf.indexOf('\n')) >= 0) {
        this.stderr?.(errBuf.slice(0, i));
        errBuf = errBuf.slice(i + 1);
      }
      if (errBuf.length > 8192) errBuf = errBuf.slice(-8192);
    });
    void io.closed.then(() => this.finish());
  }

  send(message: JSONRPCMessage): Promise<void> {
    const io = this.io;
    if (!io || this.closed) return Promise.reject(new Error('the tool server sandbox is not attached'));
    return new Promise((resolve, reject) => {
      io.stdin.write(serializeMessage(message), (err) => (err ? reject(err) : resolve()));
    });
  }

  async close(): Promise<void> {
    this.io?.close();
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.buffer.clear();
    this.onclose?.();
  }
}
