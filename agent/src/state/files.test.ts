import { spawn } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createSerialWriter, ensurePrivateDir, removeStaleTempFiles, writeFileAtomic } from "./files.ts";

const dirs: string[] = [];
const tempDir = async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-files-"));
  dirs.push(dir);
  return dir;
};
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe("state files", () => {
  it("creates the state directory 0700 and tightens an existing one", async () => {
    const dir = path.join(await tempDir(), "state");
    await ensurePrivateDir(dir);
    expect(await mode(dir)).toBe(0o700);
    await chmod(dir, 0o755);
    await ensurePrivateDir(dir);
    expect(await mode(dir)).toBe(0o700);
  });

  it("writes files 0600 whatever the umask, and replaces them whole", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "agent.json");
    const umask = process.umask(0);
    try {
      await writeFileAtomic(file, "one");
    } finally {
      process.umask(umask);
    }
    expect(await mode(file)).toBe(0o600);
    await writeFileAtomic(file, "two");
    expect(await readFile(file, "utf8")).toBe("two");
    expect(await mode(file)).toBe(0o600);
    expect((await readdir(dir)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  it("keeps the last write when writes of one file overlap", async () => {
    const file = path.join(await tempDir(), "journal.json");
    const write = createSerialWriter(file);
    await Promise.all(Array.from({ length: 20 }, (_, i) => write(`version ${i}`)));
    expect(await readFile(file, "utf8")).toBe("version 19");
  });

  it("survives a process killed in the middle of writing: old or new content, never a mix", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "journal.json");
    const big = (n: number) => JSON.stringify({ n, pad: "x".repeat(2 * 1024 * 1024) });
    await writeFileAtomic(file, big(0));
    // A child that rewrites the file as fast as it can, killed with SIGKILL mid-stream.
    const script = `
      import { writeFileAtomic } from ${JSON.stringify(path.join(import.meta.dirname, "files.ts"))};
      const big = ${big.toString()};
      for (let n = 1; ; n++) { await writeFileAtomic(${JSON.stringify(file)}, big(n)); if (n === 3) process.stdout.write("go\\n"); }
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));

    const parsed = JSON.parse(await readFile(file, "utf8")) as { n: number; pad: string };
    expect(parsed.n).toBeGreaterThanOrEqual(3);
    expect(parsed.pad.length).toBe(2 * 1024 * 1024);
    await removeStaleTempFiles(dir);
    expect(await readdir(dir)).toEqual(["journal.json"]);
  });
});
