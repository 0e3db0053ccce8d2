import { spawn } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fakeHost } from "../../test/support/fake-host.ts";
import { FAKE_ICACLS } from "../../test/support/recorded-host-tools.ts";
import { createSerialWriter, ensurePrivateDir, removeStaleTempFiles, StateError, writeFileAtomic } from "./files.ts";

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

  it("on Windows, gives the directories it creates an ACL for SYSTEM and Administrators only, once", async () => {
    const programData = await tempDir();
    const host = await fakeHost({ platform: "win32", tools: { "C:\\Windows\\System32\\icacls.exe": FAKE_ICACLS } });
    try {
      const top = path.join(programData, "RedFlag");
      const dir = path.join(top, "agent");
      await ensurePrivateDir(dir, host);
      // Inherited entries removed, then full control for LocalSystem and the Administrators
      // group (by SID), inherited by everything inside; on the new top directory and on the
      // state directory itself.
      const grants = ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"];
      expect(host.runs).toEqual([
        ["C:\\Windows\\System32\\icacls.exe", top, ...grants],
        ["C:\\Windows\\System32\\icacls.exe", dir, ...grants],
      ]);
      await ensurePrivateDir(dir, host);
      expect(host.runs).toHaveLength(2);
    } finally {
      await host.remove();
    }
  });

  it("on Windows, removes what it created and stops when the ACL cannot be set", async () => {
    const programData = await tempDir();
    const host = await fakeHost({ platform: "win32", tools: { "C:\\Windows\\System32\\icacls.exe": FAKE_ICACLS } });
    try {
      await host.tools.write("icacls.denied", "");
      const top = path.join(programData, "RedFlag");
      const failure = await ensurePrivateDir(path.join(top, "agent"), host).catch((err: unknown) => err);
      expect(failure).toBeInstanceOf(StateError);
      expect((failure as Error).message).toBe(
        `cannot restrict ${top} to SYSTEM and Administrators, so it was not created: C:\\Windows\\System32\\icacls.exe failed (exit status 5): ${top}: Access is denied.`,
      );
      expect(await readdir(programData)).toEqual([]);
      // Without icacls at all, the same.
      const missing = await fakeHost({ platform: "win32" });
      await expect(ensurePrivateDir(path.join(top, "agent"), missing).finally(() => missing.remove())).rejects.toThrow(/icacls\.exe could not start: .*ENOENT/);
      expect(await readdir(programData)).toEqual([]);
    } finally {
      await host.remove();
    }
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
