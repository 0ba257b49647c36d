/**
 * The inbox against a real Docker engine with runsc: the paths `writeFiles` returns (what the
 * agent is told) are the files actually written, also when a platform sends two attachments of
 * the same name or a name that is a path.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { SandboxDriver } from '../src/sandbox/types.js';
import { agentId } from './helpers/env.js';
import { makeDriver, sh, spec } from './helpers/sandbox.js';

const driver: SandboxDriver = makeDriver();
const created = new Set<string>();

afterAll(async () => {
  for (const a of created) await driver.destroy(a).catch(() => undefined);
  await driver.close();
});

describe('inbox paths', () => {
  it('announces each written file once, at the path it was written to (two attachments called image.png)', async () => {
    const a = agentId('inbox');
    created.add(a);
    await driver.ensure(spec(a));
    const files = [
      { name: 'image.png', data: Buffer.from('first') },
      { name: 'image.png', data: Buffer.from('second') },
      { name: '../../etc/image.png', data: Buffer.from('third') },
      { name: 'Rapport été.pdf', data: Buffer.from('fourth') },
    ];
    const paths = await driver.writeFiles(a, 'conversations/c1/inbox/ev1', files);
    expect(paths).toEqual([
      '/workspace/conversations/c1/inbox/ev1/image.png',
      '/workspace/conversations/c1/inbox/ev1/image-2.png',
      '/workspace/conversations/c1/inbox/ev1/image-3.png',
      '/workspace/conversations/c1/inbox/ev1/Rapport été.pdf',
    ]);
    // Each announced path holds its own file (no shell: the names are data).
    for (const [i, p] of paths.entries()) {
      const r = await driver.exec(a, ['cat', '--', p], { timeoutMs: 10_000 });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toBe(files[i]!.data.toString());
    }
    // And nothing else was written; every file belongs to the sandbox user.
    const listed = await sh(driver, a, "find /workspace/conversations/c1/inbox/ev1 -type f -printf '%U %p\\n' | sort");
    expect(listed.stdout.trim().split('\n')).toEqual(paths.map((p) => `1000 ${p}`).sort());
  });
});
