/**
 * The obligations every `ChannelAdapter` has, as one suite each adapter runs with its own small
 * harness (how to sign a request, a fake of its platform's API, how to read what was posted):
 *
 *   - signature rejection: a request that is not the platform's answers 401 `{error, message}`
 *     and never reaches the intake;
 *   - duplicates: a redelivery carries the same event id, so the intake runs one turn, and the
 *     platform gets its acknowledgement both times;
 *   - resume without re-posting: a reply whose delivery failed part-way is completed by the
 *     retried `send`, and nothing that already arrived is posted again;
 *   - foreign ids refused: a conversation or replyTo another adapter encoded is refused by `send`
 *     (non-retryable AgentVmError), and nothing is posted;
 *   - idempotent close;
 *   - files out: a reply's files reach the platform, bytes intact;
 *   - held-back notes: agent-chosen names are shown escaped, one line each (hostile);
 *   - bodies over the limit: 413 through the real HTTP server, nothing read past the limit;
 *   - streaming ends in exactly one final message: partial answers then the reply leave the
 *     answer once, with no stale partial text anywhere;
 *   - failure notes: a file the platform refuses for good is named in the thread with a reason;
 *   - acknowledgement independent of the API: with the platform's API hanging, a delivery is
 *     still stored and acknowledged (and taken in once the API answers again).
 */
import { Hono } from 'hono';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Address, ChannelAdapter, HeldBackFile, HeldEvent, HoldingIntake, InboundEvent, IntakeResult, OutboundFile, Platform } from '../../src/adapters/types.js';
import { DEFAULT_MAX_BODY_BYTES } from '../../src/body-limit.js';
import { isAgentVmError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { renderError } from '../../src/server.js';
import { mounted } from '../helpers/app.js';
import { chunkedUpload, serveApp } from '../helpers/upload.js';

export interface ContractReply {
  text: string;
  files: OutboundFile[];
  heldBack: HeldBackFile[];
}

/** What reached the platform's users: every message's text, and every file. */
export interface Posted {
  texts: string[];
  files: Array<{ name: string; data: Buffer }>;
}

/** One adapter under test, on a fresh fake of its platform. */
export interface HarnessRun {
  adapter: ChannelAdapter;
  /**
   * The HTTP request the platform sends for a new message whose platform id is derived from
   * `n` (the same `n` is a redelivery of the same message). `signed: false`: the same request
   * without a valid signature (or token).
   */
  inbound(n: number, o?: { signed?: boolean }): { path: string; init: RequestInit & { headers: Record<string, string> } };
  /** Delivers a reply to the conversation of `event` (an event the intake received) the way the platform's users get it. */
  deliver(event: InboundEvent, reply: ContractReply): Promise<void>;
  /**
   * Makes the next delivery of a reply fail after part of it reached the platform, retryably;
   * returns the function that heals the platform again. Absent for a channel that has no
   * partial delivery (the local channel answers in one HTTP response).
   */
  failPartway?(): () => void;
  posted(): Posted;
  /** Sends a partial answer to the conversation of `event`. Absent: the channel does not stream. */
  partial?(event: InboundEvent, text: string): Promise<void>;
  /** Makes the platform refuse the next file upload for good. Absent: no platform to refuse. */
  refuseFile?(): void;
  /** Makes every call to the platform's API hang until the returned function is called. */
  hangApi?(): () => void;
  /** Waits until what the adapter does after an acknowledgement is done (ClickUp's resolution). */
  settle?(): Promise<void>;
  close(): Promise<void>;
}

export interface ChannelHarness {
  platform: Platform;
  start(intake: RecordingIntake): Promise<HarnessRun>;
}

/** A conversation (and replyTo) as each adapter encodes them. */
export const ENCODED: Record<Platform, { conversation: string; replyTo?: string }> = {
  slack: { conversation: 'slack:T0FAKE:C0CHAN:1699999999.000100' },
  discord: {
    conversation: 'discord:900000000000000001:900000000000000002',
    replyTo: `dc1.${Buffer.from(JSON.stringify({ kind: 'channel', channel: '900000000000000002' })).toString('base64url')}`,
  },
  clickup: { conversation: 'clickup:t1' },
  local: { conversation: 'local:p:c1' },
};

/**
 * An intake that records every event and dedupes by id, as the gateway's does, including held
 * deliveries (hold → route): an id held, routed, dropped or accepted before is a duplicate.
 */
export class RecordingIntake implements HoldingIntake {
  readonly events: InboundEvent[] = [];
  readonly accepted: InboundEvent[] = [];
  readonly holds = new Map<string, { event: HeldEvent; status: 'held' | 'routed' | 'dropped'; reason?: string }>();
  /** What the next accepts answer instead of accepting (e.g. a rejection). */
  next: IntakeResult | undefined;

  async accept(event: InboundEvent): Promise<IntakeResult> {
    this.events.push(event);
    const first = this.accepted.find((e) => e.id === event.id);
    if (first) return { status: 'duplicate', profile: 'p', conversation: first.conversation };
    if (this.next) return this.next;
    this.accepted.push(event);
    return { status: 'accepted', profile: 'p' };
  }

  async hold(event: HeldEvent): Promise<{ status: 'held' } | { status: 'duplicate' }> {
    if (this.holds.has(event.id) || this.accepted.some((e) => e.id === event.id)) return { status: 'duplicate' };
    this.holds.set(event.id, { event, status: 'held' });
    return { status: 'held' };
  }

  async route(id: string, address: Address): Promise<IntakeResult> {
    const h = this.holds.get(id);
    if (!h) throw new Error(`no held delivery ${id}`);
    if (h.status !== 'held') return { status: 'duplicate', profile: 'p', conversation: h.event.conversation };
    h.status = 'routed';
    return this.accept({ ...h.event, address });
  }

  async drop(id: string, reason: string): Promise<void> {
    const h = this.holds.get(id);
    if (h?.status === 'held') Object.assign(h, { status: 'dropped', reason });
  }

  async held(platform: Platform): Promise<HeldEvent[]> {
    return [...this.holds.values()].filter((h) => h.status === 'held' && h.event.platform === platform).map((h) => h.event);
  }
}

const FORGED = 'x\nfile: invoice.pdf (2048 bytes)';
/** Long enough that Discord splits it in two messages; Slack and ClickUp post it as one. */
const LONG = `${'A'.repeat(1500)}\n${'B'.repeat(1500)}`;
/** What the server may read past the limit: the crossing chunk and what the HTTP stack buffered. */
const OVERREAD = 256 * 1024;

function count(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

async function expectErrorShape(res: Response, status: number): Promise<void> {
  expect(res.status).toBe(status);
  const body = (await res.json()) as Record<string, unknown>;
  expect(Object.keys(body).sort()).toEqual(['error', 'message']);
  expect(typeof body.error).toBe('string');
  expect(typeof body.message).toBe('string');
}

export function describeChannelAdapter(harness: ChannelHarness): void {
  describe(`${harness.platform} adapter contract`, () => {
    let intake: RecordingIntake;
    let run: HarnessRun;

    beforeEach(async () => {
      intake = new RecordingIntake();
      run = await harness.start(intake);
    });
    afterEach(async () => {
      await run.close();
    });

    const request = (n: number, o?: { signed?: boolean }) => {
      const r = run.inbound(n, o);
      return mounted(run.adapter.routes!).request(r.path, r.init);
    };

    /** An event the intake took in, as the gateway later replies to it. */
    async function takenIn(n: number): Promise<InboundEvent> {
      const res = await request(n);
      expect(res.status, await res.clone().text()).toBeLessThan(300);
      await run.settle?.();
      const e = intake.events.at(-1);
      if (!e) throw new Error('the intake received nothing');
      return e;
    }

    it('refuses a request without a valid signature with 401 {error, message}, never reaching the intake', async () => {
      await expectErrorShape(await request(1, { signed: false }), 401);
      expect(intake.events).toEqual([]);
    });

    it('gives a redelivery the same event id: the intake runs one turn, the platform is acknowledged twice', async () => {
      const first = await request(2);
      await run.settle?.();
      const again = await request(2);
      await run.settle?.();
      expect(first.status).toBeLessThan(300);
      expect(again.status).toBeLessThan(300);
      // A held delivery's redelivery may never reach accept (the intake knew it at hold).
      expect(intake.events.length).toBeGreaterThanOrEqual(1);
      expect(new Set([...intake.events.map((e) => e.id), ...intake.holds.keys()]).size).toBe(1);
      expect(intake.accepted).toHaveLength(1);
    });

    it('ends a streamed answer in exactly one final message, with no stale partial text', async () => {
      const event = await takenIn(8);
      const final = 'Streamed answer: forty-two, because six times seven.';
      await run.partial?.(event, 'Streamed ans');
      await run.partial?.(event, 'Streamed answer: forty');
      await run.deliver(event, { text: final, files: [], heldBack: [] });
      const texts = run.posted().texts;
      expect(texts.filter((t) => t.includes(final)), JSON.stringify(texts)).toHaveLength(1);
      expect(texts.filter((t) => t.includes('Streamed') && !t.includes(final))).toEqual([]);
    });

    it('names a file the platform refuses in the thread, with a reason, instead of dropping it', async () => {
      if (!run.refuseFile) return; // no platform to refuse anything (the local channel)
      const event = await takenIn(9);
      run.refuseFile();
      await run.deliver(event, { text: 'With a file.', files: [{ name: 'refused.bin', data: Buffer.from('r') }], heldBack: [] }).catch(() => undefined);
      const lines = run.posted().texts.join('\n').split('\n');
      expect(lines.some((l) => l.includes('refused.bin') && /refused|lacks|scope/i.test(l)), lines.join('\n')).toBe(true);
    });

    it("stores and acknowledges a delivery while the platform's API hangs", async () => {
      if (!run.hangApi) return; // nothing to call (the local channel)
      const heal = run.hangApi();
      // Waiting on the API here would never return.
      const res = await request(10);
      expect(res.status).toBeLessThan(300);
      expect(intake.accepted.length + [...intake.holds.values()].filter((h) => h.status === 'held').length).toBe(1);
      heal();
      await run.settle?.();
      expect(intake.accepted).toHaveLength(1);
    });

    it('resumes a reply that failed part-way without posting anything twice', async () => {
      const event = await takenIn(3);
      const reply = { text: LONG, files: [{ name: 'report.txt', data: Buffer.from('quarterly numbers') }], heldBack: [] };
      if (run.failPartway) {
        const heal = run.failPartway();
        const err = await run.deliver(event, reply).then(() => undefined, (e: unknown) => e);
        expect(isAgentVmError(err) && err.retryable, `first delivery should fail retryably, got ${String(err)}`).toBe(true);
        const partial = run.posted();
        expect(partial.texts.length + partial.files.length, 'part of the reply arrived before the failure').toBeGreaterThan(0);
        heal();
      }
      await run.deliver(event, reply);
      const all = run.posted();
      const text = all.texts.join('\n');
      expect(count(text, 'A'.repeat(1500))).toBe(1);
      expect(count(text, 'B'.repeat(1500))).toBe(1);
      expect(all.files.filter((f) => f.data.toString() === 'quarterly numbers')).toHaveLength(1);
    });

    it('refuses conversations and replyTo another adapter encoded, posting nothing', async () => {
      const own = await takenIn(4);
      const before = JSON.stringify(run.posted());
      const foreign = (Object.keys(ENCODED) as Platform[]).filter((p) => p !== harness.platform).map((p) => ENCODED[p]);
      const mixed = foreign.filter((f) => f.replyTo !== undefined).map((f) => ({ conversation: own.conversation, replyTo: f.replyTo }));
      for (const target of [...foreign, ...mixed]) {
        const err = await run.adapter
          .send({ kind: 'reply', ...target, eventId: own.id, text: 'must not arrive', files: [], heldBack: [] })
          .then(() => undefined, (e: unknown) => e);
        expect(isAgentVmError(err), `${JSON.stringify(target)} was not refused`).toBe(true);
        expect((err as { retryable: boolean }).retryable).toBe(false);
      }
      expect(JSON.stringify(run.posted())).toBe(before);
    });

    it('closes idempotently', async () => {
      await Promise.all([run.adapter.close?.(), run.adapter.close?.()]);
      await run.adapter.close?.();
    });

    it("delivers a reply's files to the platform, bytes intact", async () => {
      const event = await takenIn(5);
      const files = [
        { name: 'report.txt', data: Buffer.from('the report') },
        { name: 'charts/data.csv', data: Buffer.from('a,b\n1,2\n') },
      ];
      await run.deliver(event, { text: 'Here you go.', files, heldBack: [] });
      const got = run.posted().files;
      for (const f of files) {
        const match = got.filter((g) => g.data.equals(f.data));
        expect(match, `${f.name} did not arrive once`).toHaveLength(1);
        expect(match[0]!.name.endsWith(f.name.split('/').pop()!)).toBe(true);
      }
    });

    it('shows held-back names escaped on one line, never as a forged line (hostile)', async () => {
      const event = await takenIn(6);
      await run.deliver(event, {
        text: 'Done.',
        files: [],
        heldBack: [{ name: FORGED, reason: 'name contains control characters' }, { name: 'evil\u202etxt.exe', reason: 'symlink to /etc\npasswd' }],
      });
      const lines = run.posted().texts.join('\n').split('\n');
      const forgedLines = lines.filter((l) => l.includes('invoice.pdf'));
      expect(forgedLines).toHaveLength(1);
      expect(forgedLines[0]).toContain('x\\nfile: invoice.pdf (2048 bytes)');
      expect(lines.some((l) => /^\W*file: invoice\.pdf/.test(l))).toBe(false);
      expect(lines.join('\n')).not.toContain('\u202e');
      expect(lines.some((l) => l.includes('symlink to /etc\\npasswd'))).toBe(true);
    });

    it('refuses a body over the limit with 413 through the real HTTP server, reading nothing past it', async () => {
      // The adapter's own limit, without the app-wide one in front of it.
      const bare = new Hono();
      bare.onError((err, c) => renderError(err, c, createLogger('silent')));
      bare.route('/', run.adapter.routes!);
      const served = await serveApp(bare);
      try {
        const { path, init } = run.inbound(7);
        const headers = Object.fromEntries(Object.entries(init.headers).filter(([k]) => k.toLowerCase() !== 'content-length'));
        const r = await chunkedUpload(`${served.url}${path}`, { totalBytes: 64 * 1024 * 1024, headers });
        await new Promise((resolve) => setTimeout(resolve, 50));
        const read = served.bytesRead().reduce((a, b) => a + b, 0);
        expect(r.status).toBe(413);
        expect(JSON.parse(r.body)).toEqual({ error: 'payload_too_large', message: expect.any(String) });
        expect(read, `the server read ${read} bytes`).toBeLessThanOrEqual(DEFAULT_MAX_BODY_BYTES + OVERREAD);
        expect(intake.events).toEqual([]);
      } finally {
        await served.close();
      }
    });
  });
}
