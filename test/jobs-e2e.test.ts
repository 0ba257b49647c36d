/**
 * Jobs and schedules through the whole gateway (startGatewayApp, the reference agent under runsc):
 * the agent calls `agentvm__run_job` through its MCP endpoint and finds the result in its
 * workspace; a schedule wakes the agent like a message and its run is a conversation with a
 * transcript.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';

let g: TestGateway;
const id = profileId('jobs-e2e');

beforeAll(async () => {
  g = await startTestGateway({
    manifests: [
      manifest(id, {
        jobs: { enabled: true, limits: { cpus: 1, memoryMiB: 128, pids: 128 } },
        schedules: [{ name: 'pulse', cron: '* * * * * *', prompt: 'echo scheduled-run', post: { platform: 'local', channel: 'reports' }, overlap: 'skip' }],
      }),
    ],
  });
}, 120_000);

afterAll(async () => {
  await g?.close();
});

describe('through the gateway', () => {
  it('an agent runs a job with agentvm__run_job and reads its result in /workspace/jobs/<id>/', async () => {
    const args = JSON.stringify({ command: ['sh', '-c', 'echo from-job > out.txt; echo done'], outputs: ['out.txt'], timeoutSeconds: 60 });
    const r = await g.send({ profile: id, text: `mcp agentvm__run_job ${args}`, conversation: 'job' });
    const text = replyText(r.outcome);
    const body = JSON.parse(text.slice(text.indexOf('{'))) as { job: string; status: string; stdout: string; teardownVerified: boolean; results: { files: string[] } };
    expect(body).toMatchObject({ status: 'succeeded', stdout: 'done\n', teardownVerified: true, results: { files: [`/workspace/jobs/${body.job}/out.txt`] } });
    const back = await g.send({ profile: id, text: `sh cat /workspace/jobs/${body.job}/out.txt`, conversation: 'job' });
    expect(replyText(back.outcome)).toContain('from-job');
    expect(await g.ctx.store.jobs.get(body.job)).toMatchObject({ requestedBy: `agent:${r.conversation}`, turnId: r.eventId, teardown: 'verified' });
  }, 120_000);

  it('a schedule wakes the agent like a message; the run is a conversation with its transcript', async () => {
    const deadline = Date.now() + 60_000;
    let run;
    for (;;) {
      const last = await g.ctx.store.scheduleRuns.startedBefore(id, 'pulse', new Date(Date.now() + 60_000), 50);
      for (const r of last) {
        const ev = r.eventId ? await g.ctx.store.gateway.getEvent(r.eventId) : undefined;
        if (ev?.status === 'delivered') run = r;
      }
      if (run || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(run).toBeDefined();
    expect(run!.conversation).toMatch(new RegExp(`^local:${id}:schedule-pulse-\\d{8}T\\d{6}Z$`));
    const transcript = await g.ctx.store.gateway.transcript(run!.conversation!);
    expect(transcript.map((t) => [t.kind, t.text])).toEqual(expect.arrayContaining([['prompt', 'echo scheduled-run'], ['reply', 'scheduled-run']]));
    const audit = (await g.ctx.store.audit.tail(500)).filter((a) => a.profile === id && a.action === 'schedule.run' && a.decision === 'allow');
    expect(audit.length).toBeGreaterThan(0);
  }, 120_000);
});
