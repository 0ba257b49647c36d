/** Tier-2 jobs: one-shot sandboxes for untrusted work. The contract is in types.ts. */
export type { JobResult, JobRunner, JobSubmission } from './types.js';
export { createJobRunner, jobSandboxId, type JobRunnerOptions } from './runner.js';
export { createJobQueue, jobQueueName, type JobQueue } from './queue.js';
export { JOB_DIR, RESULTS_DIR } from './request.js';
