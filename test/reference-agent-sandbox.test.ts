/**
 * The reference agent as shipped in the image, inside a runsc sandbox, spoken to in ACP
 * (newline-delimited JSON-RPC) over the sandbox's attached stdio: the path gateway units use.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { OutboxEntry, SandboxStdio } from '../src/sandbox/types.js';
import { agentId } from './helpers/env.js';
import { makeDriver, spec } from './helpers/sandbox.js';

const driver = makeDriver();
const a = agentId('refagent');
afterAll(async () => {
  await driver.destroy(a).catch(() => undefined);
  await driver.close();
});

/** A minimal JSON-RPC peer: enough to drive one turn and see every message. */
function rpc(io: SandboxStdio) {
  let buf = '';
  let next = 1;
  const waiting = new Map<number, (msg: Record<string, unknown>) => void>();
  const notifications: Array<Record<string, unknown>> = [];
  io.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if (typeof msg.id === 'number' && waiting.has(msg.id)) waiting.get(msg.id)!(msg);
      else notifications.push(msg);
    }
  });
  return {
    notifications,
    request(method: string, params: unknown): Promise<Record<string, unknown>> {
      const id = next++;
      io.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${method}: no answer in 15 s`)), 15_000);
        waiting.set(id, (m) => {
          clearTimeout(t);
          resolve(m);
        });
      });
    },
  };
}

describe('reference agent in a gVisor sandbox', () => {
  it('answers ACP over attached stdio, writes to the outbox, and remembers across a sleep', async () => {
    const agentSpec = spec(a, { stdin: true, command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'] });
    const h = await driver.ensure(agentSpec);
    expect(h.runtime).toBe('runsc');
    let io = await driver.attach(a);
    let peer = rpc(io);

    const init = await peer.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    expect((init.result as { protocolVersion: number }).protocolVersion).toBe(1);
    const session = await peer.request('session/new', { cwd: '/workspace', mcpServers: [] });
    const sessionId = (session.result as { sessionId: string }).sessionId;
    expect(sessionId).toBeTruthy();

    const turn = await peer.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'write hello.txt made in a sandbox' }] });
    expect(turn.result).toEqual({ stopReason: 'end_turn' });
    const chunk = peer.notifications.find((n) => n.method === 'session/update');
    expect(JSON.stringify(chunk)).toContain('wrote hello.txt');
    await peer.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'remember colour teal' }] });

    const out: OutboxEntry[] = [];
    for await (const e of driver.readOutbox(a, 'outbox')) out.push(e);
    expect(out).toEqual([{ kind: 'file', name: 'hello.txt', size: 17, data: Buffer.from('made in a sandbox') }]);

    // Sleep (the agent process ends), wake, reconnect: the workspace memory is still there.
    io.close();
    await driver.sleep(a);
    await driver.ensure(agentSpec);
    io = await driver.attach(a);
    peer = rpc(io);
    await peer.request('initialize', { protocolVersion: 1, clientCapabilities: {} });
    await peer.request('session/load', { sessionId, cwd: '/workspace', mcpServers: [] });
    const recall = await peer.request('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'recall colour' }] });
    expect(recall.result).toEqual({ stopReason: 'end_turn' });
    expect(JSON.stringify(peer.notifications)).toContain('teal');
    io.close();
  });
});
