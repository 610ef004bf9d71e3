import { defineConfig } from 'vitest/config';

/** Two projects with their own budgets: unit tests (fakes, loopback servers) and integration tests (the real engine). */
export default defineConfig({
  test: {
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 10_000, hookTimeout: 10_000 },
      },
      {
        extends: true,
        test: { name: 'integration', include: ['test/integration/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 300_000 },
      },
    ],
  },
});
