#!/usr/bin/env node
// Runs the TypeScript source directly: Node 24 strips types natively.
const { main } = await import("../src/main.ts");
process.exitCode = await main(process.argv.slice(2), process.env);
