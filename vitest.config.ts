import { defineConfig } from 'vitest/config';

/**
 * Two projects. `unit`: no service at all (the fake sandbox driver, in-process fakes), seconds;
 * `npm run test:unit`. `integration`: real Docker + runsc, PostgreSQL, Redis and the platform
 * fakes; fails (never skips) when one is missing. `npm test` runs both.
 */
export default defineConfig({
  test: {
    // Sandboxes are real containers on a 2-core machine: keep parallelism low and time generous.
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['src/**/*.test.ts', 'agents/**/*.test.ts', 'test/unit/**/*.test.ts'],
          globalSetup: ['test/unit/setup.ts'],
          testTimeout: 20_000,
          // Mostly waiting (timers, child agents), not CPU: `npm run test:unit` alone runs more
          // files at once than cores; inside `npm test` it shares the machine with Docker.
          maxWorkers: Number(process.env.AGENTVM_UNIT_WORKERS ?? 2),
          // Files of a worker share loaded modules (each test builds its own gateway, store and
          // fakes): importing the app once per worker, not once per file, halves the CPU.
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/*.test.ts'],
          globalSetup: ['test/global-setup.ts'],
        },
      },
    ],
  },
});
