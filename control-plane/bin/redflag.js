#!/usr/bin/env node
// Runs the TypeScript source directly: Node 24 strips types natively.
await import("../src/cli/main.ts");
