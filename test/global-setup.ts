/**
 * Integration tests need the real things. If one is missing the run fails here, once, with
 * what to do; no test skips itself.
 */
import net from 'node:net';
import { connectDocker } from '../src/sandbox/docker/engine.js';
import { TEST_IMAGE, testConfig } from './helpers/env.js';
import { useRunTmp } from './helpers/run-tmp.js';

function tcpCheck(host: string, port: number, probe?: string, expect?: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const fail = (why: string) => {
      s.destroy();
      reject(new Error(why));
    };
    s.setTimeout(3000, () => fail('timed out'));
    s.once('error', (e) => fail(e.message));
    s.once('connect', () => {
      if (!probe) {
        s.end();
        return resolve();
      }
      s.write(probe);
      s.once('data', (d) => {
        s.end();
        if (expect && !expect.test(d.toString())) fail(`unexpected answer ${JSON.stringify(d.toString())}`);
        else resolve();
      });
    });
  });
}

export default async function setup(): Promise<() => void> {
  const removeRunTmp = useRunTmp();
  const problems: string[] = [];
  const cfg = testConfig();
  const docker = connectDocker(cfg.docker);
  try {
    const info = await docker.info();
    if (!Object.keys(info.Runtimes ?? {}).includes('runsc')) {
      problems.push('the Docker engine has no runsc runtime: run `bash scripts/host-setup.sh`');
    }
    try {
      await docker.getImage(TEST_IMAGE).inspect();
    } catch {
      problems.push(`image ${TEST_IMAGE} is missing: run \`npm run build && node bin/agent-vm.js image build\``);
    }
  } catch (err) {
    problems.push(`Docker engine unreachable (${(err as Error).message}): run \`bash scripts/host-setup.sh\``);
  }
  await tcpCheck('127.0.0.1', 5432).catch((e: Error) =>
    problems.push(`PostgreSQL on 127.0.0.1:5432 unreachable (${e.message})`),
  );
  await tcpCheck('127.0.0.1', 6379, 'PING\r\n', /PONG/).catch((e: Error) =>
    problems.push(`Redis on 127.0.0.1:6379 unreachable (${e.message})`),
  );
  if (problems.length > 0) {
    removeRunTmp();
    throw new Error(`integration prerequisites missing:\n - ${problems.join('\n - ')}`);
  }
  return removeRunTmp;
}
