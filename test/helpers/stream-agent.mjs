/**
 * A minimal ACP agent for streaming tests: every prompt is answered with STREAM_AGENT_CHUNKS
 * (default 30) `agent_message_chunk`s, STREAM_AGENT_MS (default 40) ms apart, whose concatenation
 * is `streamAgentAnswer(n)` (test/streamed-final.test.ts builds the same text). Run by the fake
 * sandbox driver through its `programs` mapping, as the reference agent is.
 */
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';

const chunks = Number(process.env.STREAM_AGENT_CHUNKS ?? 30);
const gapMs = Number(process.env.STREAM_AGENT_MS ?? 40);
const piece = (i) => (i === 0 ? 'Streamed **answer**:' : ` part ${i}${i % 7 === 0 ? '.\n\n' : ','}`);
let n = 0;

const app = acp
  .agent({ name: 'stream-agent' })
  .onRequest('initialize', () => ({
    protocolVersion: acp.PROTOCOL_VERSION,
    agentCapabilities: { loadSession: false, promptCapabilities: { image: false, audio: false, embeddedContext: false }, mcpCapabilities: { http: true, sse: false } },
    agentInfo: { name: 'stream-agent', title: 'streaming test agent', version: '1.0.0' },
    authMethods: [],
  }))
  .onRequest('authenticate', () => ({}))
  .onRequest('session/new', () => ({ sessionId: `stream-${process.pid}-${++n}` }))
  .onRequest('session/prompt', async ({ params, client }) => {
    for (let i = 0; i < chunks; i++) {
      await client.notify('session/update', { sessionId: params.sessionId, update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: piece(i) } } });
      await new Promise((r) => setTimeout(r, gapMs));
    }
    return { stopReason: 'end_turn' };
  })
  .onNotification('session/cancel', () => undefined);

const connection = app.connect(acp.ndJsonStream(Writable.toWeb(process.stdout), Readable.toWeb(process.stdin)));
void connection.closed.then(() => process.exit(0), () => process.exit(1));
