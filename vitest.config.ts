import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["control-plane/**/*.test.ts", "agent/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Each file starts real servers and databases; two at a time suits the 2-core machines.
    maxWorkers: 2,
    pool: "forks",
  },
});
