import { randomBytes } from 'node:crypto';
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

/** The variable that marks every process of one exec, so its deadline can find them all. */
const EXEC_MARK = 'AGENTVM_EXEC_ID';

/**
 * Run at an exec's deadline, inside the sandbox as the sandbox user: kills every process that
 * carries the exec's mark (`$1`), and the process group of each (the exec's own group, as
 * `timeout -s KILL` would). One `grep` reads every environment; pid 1 (the sandbox's main
 * process) is never a target, whatever it claims to carry.
 */
const KILL_MARKED =
  'for f in $(grep -lzx "' + EXEC_MARK + '=$1" /proc/[0-9]*/environ 2>/dev/null); do ' +
  'p=${f#/proc/}; p=${p%/environ}; [ "$p" -gt 1 ] 2>/dev/null || continue; ' +
  'kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done; true';

/**
 * Runs `command` in the container with two deadlines. At `timeoutMs` a second exec kills, inside
 * the sandbox, every process of this command: each carries a random mark in its environment
 * (`AGENTVM_EXEC_ID`), so the command's process group goes, and so does a child that left the
 * group but kept its environment. Shortly after, our own timer stops waiting if the stream is
 * still open (a process that escaped both, or an engine too busy to run the kill, cannot hold
 * us; the sandbox's sleep ends what is left).
 *
 * Why not `timeout -s KILL` around the command, as before: under runsc the wrapper's extra fork
 * and exec cost about 26 ms on every command (measured on this project's 2-core machines: 108
 * → 134 ms p50 for `true`), most of what a wake added over a bare start. The kill now costs an
 * exec only when a deadline passes.
 */
export async function runExec(
  docker: DockerClient,
  container: Container,
  command: string[],
  options: ExecOptions,
): Promise<ExecResult> {
  const started = performance.now();
  const mark = randomBytes(16).toString('hex');
  const exec = await container.exec({
    Cmd: command,
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    User: SANDBOX_USER,
    WorkingDir: WORKSPACE,
    // The mark last, so a caller's variable of the same name cannot replace it.
    Env: [...Object.entries(options.env ?? {}).filter(([k]) => k !== EXEC_MARK).map(([k, v]) => `${k}=${v}`), `${EXEC_MARK}=${mark}`],
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
  let killed = false;
  const killTimer = setTimeout(() => {
    killed = true;
    void killMarked(container, mark);
  }, Math.max(options.timeoutMs, 1));
  await new Promise<void>((resolve) => {
    // Deliberately not "first reason wins": a stop report from the engine that was already on its
    // way when the stream closed still counts (the sandbox died under the command), so the exit
    // code is not asked for. A report that comes later (the wait is aborted once the stream ends)
    // is the driver's to find: it looks again when the command failed, including runsc's own 128
    // ("WaitPID failed: EOF", docker/index.ts).
    const finish = (why: typeof ended) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
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
  // The deadline's kill makes the command exit 137; a 137 before it is some other kill.
  const timedOut = gaveUp || (killed && (exitCode === 137 || exitCode === null));
  const out = { exitCode, stdout: stdout.text(), stderr: stderr.text() };
  const notStarted = exitCode === 126 && ENGINE_EXEC_FAILED.exec(out.stdout);
  if (notStarted) {
    // The runtime could not start the command: the engine says so in the command's stdout, with
    // 126 for every reason. Report it as a shell would: 127 when there is no such file, 126
    // otherwise, and the reason on stderr.
    const reason = notStarted[1]!.trim();
    Object.assign(out, { exitCode: NO_SUCH_FILE.test(reason) ? 127 : 126, stdout: '', stderr: `${command[0]}: cannot run it: ${reason}\n` });
  }
  return {
    ...out,
    timedOut,
    truncated: stdout.truncated || stderr.truncated,
    durationMs: Math.round(durationMs),
  };
}

/** The engine's own message when the runtime cannot start an exec's command (runc and runsc alike). */
const ENGINE_EXEC_FAILED = /^OCI runtime exec failed: ([^]*)$/;
const NO_SUCH_FILE = /no such file or directory|not found/i;

/** Starts the deadline's kill (KILL_MARKED) and does not wait for it: the exec's stream tells. */
async function killMarked(container: Container, mark: string): Promise<void> {
  try {
    const killer = await container.exec({ Cmd: ['sh', '-c', KILL_MARKED, 'agentvm-deadline', mark], AttachStdout: false, AttachStderr: false, Tty: false, User: SANDBOX_USER });
    await killer.start({ Detach: true, Tty: false });
  } catch {
    // The sandbox stopped, or the engine is too busy: the outer timer stops waiting anyway.
  }
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
