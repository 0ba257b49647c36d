import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'agents/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Sandboxes are real containers on a 2-core machine: keep parallelism low and time generous.
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
