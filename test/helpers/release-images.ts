/**
 * Test images for releases, built on the agent image (a layer each, seconds): `good` (a label
 * only: same agent, another digest), `broken` (the agent program is gone: it exits at start),
 * `slow` (the agent never answers initialize).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const AGENT = '/opt/agent-vm/agents/reference/agent.mjs';

export const RELEASE_TEST_REPO = 'agentvm-release-test';

export async function buildReleaseImage(kind: 'good' | 'broken' | 'slow', tag: string, base = 'agent-vm/agent:latest'): Promise<{ ref: string; id: string }> {
  const ref = `${RELEASE_TEST_REPO}/${kind}:${tag}`;
  const lines = [`FROM ${base}`, `LABEL agent-vm.agent-version="${kind}-${tag}"`];
  if (kind === 'broken') lines.push(`USER root`, `RUN rm -f ${AGENT}`, `USER 1000:1000`);
  if (kind === 'slow') lines.push(`USER root`, `RUN printf 'setInterval(() => undefined, 1 << 30);\\n' > ${AGENT}`, `USER 1000:1000`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'agentvm-relimg-'));
  await writeFile(path.join(dir, 'Dockerfile'), `${lines.join('\n')}\n`);
  await run('docker', ['build', '-q', '-t', ref, dir], { timeout: 180_000 });
  const { stdout } = await run('docker', ['image', 'inspect', '-f', '{{.Id}}', ref]);
  return { ref, id: stdout.trim() };
}

export async function docker(args: string[]): Promise<string> {
  const { stdout } = await run('docker', args, { timeout: 120_000 });
  return stdout.trim();
}
