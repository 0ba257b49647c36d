/**
 * The fake driver's processes (fake.ts): a command run to completion with the Docker driver's
 * exec semantics (timeout, output cap, exit code 137 at the deadline), and an attach to a main
 * process's stdio that a later attach replaces. No isolation at all: tests only.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { PassThrough, Writable } from 'node:stream';
import type { ExecOptions, ExecResult, SandboxStdio } from './types.js';

export function runProcess(cmd: string, args: string[], o: { cwd: string; env: NodeJS.ProcessEnv } & Omit<ExecOptions, 'env'>): Promise<ExecResult> {
  const max = o.maxOutputBytes ?? 1024 * 1024;
  const started = performance.now();
  return new Promise<ExecResult>((resolve) => {
    // Its own process group, so a timeout kills everything it started (as the Docker driver kills an exec's group at its deadline).
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let sizes = [0, 0];
    let truncated = false;
    let timedOut = false;
    const take = (i: number, bucket: Buffer[]) => (d: Buffer) => {
      const room = max - sizes[i]!;
      if (room <= 0) return void (truncated = true);
      const part = d.length <= room ? d : d.subarray(0, room);
      if (part.length < d.length) truncated = true;
      bucket.push(part);
      sizes = i === 0 ? [sizes[0]! + part.length, sizes[1]!] : [sizes[0]!, sizes[1]! + part.length];
    };
    child.stdout.on('data', take(0, out));
    child.stderr.on('data', take(1, err));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, o.timeoutMs);
    const finish = (code: number | null) => {
      clearTimeout(timer);
      resolve({
        exitCode: timedOut ? 137 : code, // as the engine reports a command killed at its deadline
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        truncated,
        durationMs: performance.now() - started,
      });
    };
    child.once('error', (e) => {
      err.push(Buffer.from(e.message));
      finish(127);
    });
    child.once('close', (code) => finish(code));
  });
}

/** Where a main process's output goes while attached. */
export interface AttachPoint {
  out?: PassThrough | undefined;
  err?: PassThrough | undefined;
  ended?: (() => void) | undefined;
}

/** Attaches to `proc` through `at` (one attach at a time: a new one ends the old). */
export function attachTo(proc: ChildProcessWithoutNullStreams, at: AttachPoint): SandboxStdio {
  at.ended?.();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let done = false;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const end = () => {
    if (done) return;
    done = true;
    if (at.out === stdout) at.out = undefined;
    if (at.err === stderr) at.err = undefined;
    stdout.end();
    stderr.end();
    resolveClosed();
  };
  at.out = stdout;
  at.err = stderr;
  at.ended = end;
  // Writes reach the process; ending this stream never closes the process's stdin.
  const stdin = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (done || proc.stdin.destroyed) return cb();
      proc.stdin.write(chunk, () => cb());
    },
  });
  return { stdin, stdout, stderr, closed, close: end };
}
