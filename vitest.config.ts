import { fileURLToPath } from "node:url";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Across both projects: the 2-core machines run two test files at a time.
    maxWorkers: 2,
    projects: [
      {
        test: {
          name: "server",
          include: ["common/**/*.test.ts", "control-plane/**/*.test.ts", "agent/**/*.test.ts", "bench/**/*.test.ts", "test/**/*.test.ts"],
          exclude: ["**/node_modules/**"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // Each file starts real servers and databases; two at a time suits the 2-core machines.
          maxWorkers: 2,
          pool: "forks",
        },
      },
      {
        // The console's components, compiled by Svelte and rendered in jsdom, talking to
        // in-memory Connect transports (console/src/lib/testing/).
        plugins: [svelte({ configFile: false })],
        resolve: {
          conditions: ["browser"],
          // SvelteKit's runtime modules, replaced by small test doubles (see the files).
          alias: {
            "$app/navigation": fileURLToPath(new URL("console/src/lib/testing/app-navigation.ts", import.meta.url)),
            "$app/state": fileURLToPath(new URL("console/src/lib/testing/app-state.svelte.ts", import.meta.url)),
          },
        },
        test: {
          name: "console",
          root: "console",
          include: ["src/**/*.test.ts"],
          environment: "jsdom",
          setupFiles: ["src/lib/testing/setup.ts"],
        },
      },
    ],
  },
});
