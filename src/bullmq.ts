/**
 * BullMQ, loaded the first time a process uses Redis. The turn queue, the job queue and the
 * schedules each have an in-process form for a gateway without REDIS_URL, and such a gateway
 * never loads BullMQ or ioredis: about 9 MiB of its idle RSS (measured on this project's
 * machines: `agent-vm up` on PGlite holds about 245 MiB against a 250 MiB target).
 *
 * Import its types with `import type` only, so nothing loads it before this does.
 */
let loading: Promise<typeof import('bullmq')> | undefined;

export function bullmq(): Promise<typeof import('bullmq')> {
  loading ??= import('bullmq');
  return loading;
}
