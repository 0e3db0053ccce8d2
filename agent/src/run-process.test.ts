import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runProcess, which } from "./run-process.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-proc-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fakeExecutable(name: string, script: string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, `#!/bin/sh\n${script}\n`);
  await chmod(file, 0o755);
  return file;
}

// A zombie waiting for a reaper counts as dead: it runs nothing.
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

describe("runProcess", () => {
  it("kills a hung child and everything it started when the timeout passes", async () => {
    const pidFile = path.join(dir, "grandchild.pid");
    const hang = await fakeExecutable("hang", `sleep 300 &\necho $! > "$1"\necho started\nsleep 300`);
    const started = Date.now();
    const result = await runProcess([hang, pidFile], { timeoutMs: 500, killGraceMs: 200 });
    expect(result.timedOut).toBe(true);
    expect(result.exitCode).toBeNull();
    expect(result.stdout).toBe("started\n");
    expect(Date.now() - started).toBeLessThan(5000);
    const grandchild = Number((await readFile(pidFile, "utf8")).trim());
    await new Promise((r) => setTimeout(r, 100));
    expect(await alive(grandchild)).toBe(false);
  });

  it("escalates to SIGKILL for a child that ignores SIGTERM", async () => {
    const stubborn = await fakeExecutable("stubborn", `trap '' TERM\necho ready\nwhile :; do sleep 0.05; done`);
    const result = await runProcess([stubborn], { timeoutMs: 300, killGraceMs: 300 });
    expect(result.timedOut).toBe(true);
    expect(result.signal).toBe("SIGKILL");
    expect(result.durationMs).toBeLessThan(5000);
  });

  it("stops the child when the signal aborts", async () => {
    const hang = await fakeExecutable("hang2", "sleep 300");
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const result = await runProcess([hang], { timeoutMs: 60_000, signal: controller.signal, killGraceMs: 200 });
    expect(result.aborted).toBe(true);
    expect(result.timedOut).toBe(false);
  });

  it("bounds the output it keeps", async () => {
    const noisy = await fakeExecutable("noisy", "head -c 5000000 /dev/zero | tr '\\\\0' 'a'\necho oops >&2\nexit 3");
    const result = await runProcess([noisy], { timeoutMs: 10_000, maxOutputBytes: 1000 });
    expect(result.exitCode).toBe(3);
    expect(result.stdout).toHaveLength(1000);
    expect(result.stderr).toBe("oops\n");
    expect(result.truncated).toBe(true);
  });

  it("passes arguments as they are, never through a shell", async () => {
    const echo = await fakeExecutable("echo-args", 'printf "%s\\n" "$@"');
    const marker = path.join(dir, "pwned");
    const result = await runProcess([echo, `$(touch ${marker})`, "a b;c"], { timeoutMs: 5000 });
    expect(result.stdout).toBe(`$(touch ${marker})\na b;c\n`);
    await expect(readFile(marker)).rejects.toThrow();
  });

  it("reports a missing executable instead of throwing", async () => {
    const result = await runProcess([path.join(dir, "missing")], { timeoutMs: 1000 });
    expect(result.spawnError?.code).toBe("ENOENT");
    expect(result.exitCode).toBeNull();
  });

  it("finds executables on PATH", async () => {
    await fakeExecutable("only-here", "true");
    expect(await which("only-here", `/nonexistent:${dir}`)).toBe(path.join(dir, "only-here"));
    expect(await which("only-here", "/usr/bin")).toBeUndefined();
  });
});
