import { Writable } from 'node:stream';
import type { DockerClient, Container } from './engine.js';
import { SANDBOX_USER, WORKSPACE } from './hardening.js';
import type { ExecOptions, ExecResult } from '../types.js';

const DEFAULT_MAX_OUTPUT = 1024 * 1024;
/** How long past the in-sandbox kill we wait before giving up on the stream ourselves. */
const OUTER_GRACE_MS = 2_000;

class Capped extends Writable {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly max: number) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    const room = this.max - this.size;
    if (room > 0) {
      const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
      this.chunks.push(part);
      this.size += part.length;
    }
    if (chunk.length > room) this.truncated = true;
    cb();
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/**
 * Runs `command` in the container with two independent deadlines: `timeout -s KILL` inside
 * the sandbox kills the command's whole process group, and our own timer stops waiting if
 * the stream is still open shortly after (a process that escaped the group cannot hold us).
 */
export async function runExec(
  docker: DockerClient,
  container: Container,
  command: string[],
  options: ExecOptions,
): Promise<ExecResult> {
  const started = performance.now();
  const seconds = (Math.max(options.timeoutMs, 1) / 1000).toFixed(3);
  const exec = await container.exec({
    Cmd: ['timeout', '-s', 'KILL', seconds, ...command],
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    User: SANDBOX_USER,
    WorkingDir: WORKSPACE,
    Env: Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`),
  });
  const stream = await exec.start({ hijack: true, stdin: false, Tty: false });
  const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const stdout = new Capped(max);
  const stderr = new Capped(max);
  docker.modem.demuxStream(stream, stdout, stderr);

  // Under runsc an exec stream is not closed when the whole sandbox dies (pids or memory
  // limit), so we also wait on the container and stop as soon as it is no longer running.
  const watch = new AbortController();
  let ended = 'stream' as 'stream' | 'deadline' | 'sandbox';
  await new Promise<void>((resolve) => {
    // Deliberately not "first reason wins": a stop report from the engine that was already on its
    // way when the stream closed still counts (the sandbox died under the command), so the exit
    // code is not asked for. A report that comes later (the wait is aborted once the stream ends)
    // is the driver's to find: it looks again when the command failed, including runsc's own 128
    // ("WaitPID failed: EOF", docker/index.ts).
    const finish = (why: typeof ended) => {
      clearTimeout(timer);
      watch.abort();
      if (why !== 'stream') {
        ended = why;
        stream.destroy();
      }
      resolve();
    };
    const timer = setTimeout(() => finish('deadline'), options.timeoutMs + OUTER_GRACE_MS);
    stream.once('end', () => finish('stream'));
    stream.once('close', () => finish('stream'));
    stream.once('error', () => finish('stream'));
    container.wait({ condition: 'not-running', abortSignal: watch.signal }).then(
      () => finish('sandbox'),
      () => undefined, // aborted because the command finished first, or the engine went away
    );
  });
  const durationMs = performance.now() - started;
  const gaveUp = ended === 'deadline';

  const exitCode = ended === 'stream' ? await settledExitCode(exec, container) : null;
  // `timeout -s KILL` makes the command exit 137 at its deadline; an early 137 is some other kill.
  const timedOut = gaveUp || (exitCode === 137 && durationMs >= options.timeoutMs * 0.95);
  return {
    exitCode,
    stdout: stdout.text(),
    stderr: stderr.text(),
    timedOut,
    truncated: stdout.truncated || stderr.truncated,
    durationMs: Math.round(durationMs),
  };
}

/**
 * How long we keep asking for an exec's exit code after its stream closed. 3 s was not enough on
 * a loaded 2-core CI machine (an `exit 3` came back with no exit code); the wait costs nothing
 * when the engine answers at once.
 */
const EXIT_SETTLE_MS = 15_000;

/**
 * The engine can report the exec as still running for a moment after its output stream has
 * closed (seen under runsc under load), so the exit code is polled until it settles rather than
 * read once; `null` only if the engine never reports it.
 */
async function settledExitCode(
  exec: { inspect(): Promise<{ Running: boolean; ExitCode: number | null }> },
  container: { inspect(): Promise<{ State: { Running: boolean } }> },
): Promise<number | null> {
  const started = performance.now();
  let checkedSandboxAt = started;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    const info = await exec.inspect().catch(() => undefined);
    if (info && !info.Running && typeof info.ExitCode === 'number') return info.ExitCode;
    // A failed inspect (the engine busy) is asked again, like a still-running one.
    const now = performance.now();
    if (now - started >= EXIT_SETTLE_MS) return null;
    // An exec that died with its sandbox never gets an exit code: stop asking once it is gone.
    if (now - checkedSandboxAt >= 1_000) {
      checkedSandboxAt = now;
      const running = await container.inspect().then((c) => c.State.Running, () => true);
      if (!running) return null;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}
