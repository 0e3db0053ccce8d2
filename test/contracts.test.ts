import { execFile } from "node:child_process";
import { cp, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");
const buf = path.join(root, "node_modules", ".bin", "buf");
// buf runs the local protoc-gen-es plugin; it must find the project's Node 24 and plugin first.
const env = { ...process.env, PATH: `${path.join(root, "node_modules", ".bin")}${path.delimiter}${process.env.PATH}` };

async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

describe("contracts", () => {
  const scratch: string[] = [];
  afterAll(async () => {
    for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  });

  it("pass buf lint (STANDARD)", async () => {
    await expect(run(buf, ["lint"], { cwd: root, env })).resolves.toBeDefined();
  });

  it("match the committed gen/ exactly", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "redflag-gen-"));
    scratch.push(dir);
    await cp(path.join(root, "proto"), path.join(dir, "proto"), { recursive: true });
    await cp(path.join(root, "buf.yaml"), path.join(dir, "buf.yaml"));
    await cp(path.join(root, "buf.gen.yaml"), path.join(dir, "buf.gen.yaml"));
    await run(buf, ["generate"], { cwd: dir, env });
    const fresh = path.join(dir, "gen", "src");
    const committed = path.join(root, "gen", "src");
    const names = await files(fresh);
    expect(await files(committed), "files in gen/src (run npm run generate)").toEqual(names);
    for (const name of names) {
      const [a, b] = await Promise.all([readFile(path.join(fresh, name), "utf8"), readFile(path.join(committed, name), "utf8")]);
      expect(b, `gen/src/${name} is stale: run npm run generate`).toBe(a);
    }
  });
});

describe("package sources", () => {
  it("are the same set in the control plane's subsystems, the agent's scanners and its installers", async () => {
    const { SUBSYSTEMS } = await import("../control-plane/src/domain/agent-config.ts");
    const { SCANNERS, INSTALLERS } = await import("../agent/src/sources/index.ts");
    const sources = SUBSYSTEMS.filter((s) => s !== "system" && s !== "storage");
    expect(SCANNERS.map((s) => s.name).sort()).toEqual([...sources].sort());
    expect([...INSTALLERS.keys()].sort()).toEqual([...sources].sort());
  });
});
