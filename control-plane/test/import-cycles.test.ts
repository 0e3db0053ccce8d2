import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

// Dependencies inside the control plane point one way (routes → services → domain → store): no
// module imports, even for a type only, a module that imports it back, however indirectly.
const root = path.resolve(import.meta.dirname, "../src");

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "generated" ? [] : modules(p);
    return p.endsWith(".ts") && !p.endsWith(".test.ts") ? [p] : [];
  });
}

function cycles(): string[] {
  const files = new Set(modules(root));
  const imports = new Map(
    [...files].map((f) => [
      f,
      [...readFileSync(f, "utf8").matchAll(/(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g)].map((m) => path.resolve(path.dirname(f), m[1]!)).filter((p) => files.has(p)),
    ]),
  );
  const found: string[] = [];
  const state = new Map<string, "open" | "done">();
  const visit = (f: string, stack: string[]) => {
    state.set(f, "open");
    stack.push(f);
    for (const d of imports.get(f)!) {
      if (state.get(d) === "open") found.push([...stack.slice(stack.indexOf(d)), d].map((p) => path.relative(root, p)).join(" → "));
      else if (!state.has(d)) visit(d, stack);
    }
    stack.pop();
    state.set(f, "done");
  };
  for (const f of files) if (!state.has(f)) visit(f, []);
  return found;
}

describe("control-plane modules", () => {
  it("import one another without a circle", () => {
    expect(cycles()).toEqual([]);
  });
});

// Only store/ talks to the database (schema.prisma says so; docs/architecture.md draws it): a
// query written anywhere else, even a count, belongs in a store function.
describe("database access", () => {
  it("happens in store/ only", () => {
    const query = /\b(?:db|tx|prisma)\.[a-zA-Z]+\.(?:find|create|update|delete|upsert|count|aggregate|groupBy)\w*\(|\$(?:queryRaw|executeRaw|queryRawUnsafe|executeRawUnsafe)\b/;
    const outside = modules(root)
      .filter((f) => !f.startsWith(path.join(root, "store") + path.sep))
      .flatMap((f) => readFileSync(f, "utf8").split("\n").map((line, i) => ({ f, line, i })))
      .filter(({ line }) => query.test(line))
      .map(({ f, i, line }) => `${path.relative(root, f)}:${i + 1}: ${line.trim()}`);
    expect(outside).toEqual([]);
  });
});
