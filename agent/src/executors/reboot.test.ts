import { create } from "@bufbuild/protobuf";
import { CommandOutcome, CommandSchema, RebootSchema } from "@redflag/gen/command_pb";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../log.ts";
import { executeCommand } from "./index.ts";
import { createReboot, rebootPlan } from "./reboot.ts";
import { readPostHook, runHook, runPendingPostHook } from "./reboot-hooks.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "redflag-reboot-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

// A fake shutdown(8) that records its argv, one per line, and exits as told.
async function fakeShutdown(exit = 0, stderr = "") {
  const script = `#!/bin/sh\nfor a in "$@"; do echo "$a"; done > "${dir}/argv"\n${stderr ? `echo "${stderr}" >&2\n` : ""}exit ${exit}\n`;
  await writeFile(path.join(dir, "shutdown"), script);
  await chmod(path.join(dir, "shutdown"), 0o755);
}
const argv = async () => (await readFile(path.join(dir, "argv"), "utf8")).trim().split("\n");
const command = (value: Partial<{ delaySeconds: number; message: string; force: boolean }>) =>
  create(CommandSchema, { id: "r", sequence: 1n, action: { case: "reboot", value: create(RebootSchema, value) } });
const run = (needed: boolean, value: Parameters<typeof command>[0]) =>
  executeCommand(command(value), {
    agentConfig: undefined,
    aptRefresh: false,
    env: { PATH: dir },
    logger: silentLogger,
    executors: { reboot: createReboot(async () => ({ required: needed, by: needed ? ["linux-image-6.1.0-28-amd64"] : [], sources: needed ? ["dpkg"] : [] })) },
  });

describe("reboot", () => {
  it("schedules a restart when the host needs one, at least a minute out, with the message", async () => {
    await fakeShutdown();
    const result = await run(true, { delaySeconds: 0, message: "Kernel update" });
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    expect(result.message).toMatch(/^reboot scheduled for .* \(required by linux-image-6\.1\.0-28-amd64\)$/);
    expect(await argv()).toEqual(["-r", "+1", "Kernel update"]);
    expect(result.detail).toMatchObject({ case: "reboot", value: { scheduled: true, wasRequired: true } });
  });

  it("does nothing when no reboot is needed, unless forced", async () => {
    await fakeShutdown();
    const skipped = await run(false, {});
    expect(skipped.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(skipped.message).toMatch(/no reboot needed/);
    await expect(readFile(path.join(dir, "argv"))).rejects.toThrow();
    const forced = await run(false, { force: true, delaySeconds: 600 });
    expect(forced.message).toMatch(/\(forced\)$/);
    expect(await argv()).toEqual(["-r", "+10"]);
  });

  it("reports a shutdown that fails, and refuses bad messages without running anything", async () => {
    await fakeShutdown(1, "Failed to set wall message, ignoring: Interactive authentication required.");
    const failed = await run(true, {});
    expect(failed.outcome).toBe(CommandOutcome.FAILED);
    expect(failed.message).toMatch(/could not schedule the reboot: Failed to set wall message/);
    await rm(path.join(dir, "argv"));
    const bad = await run(true, { message: "-h now" });
    expect(bad.outcome).toBe(CommandOutcome.FAILED);
    await expect(readFile(path.join(dir, "argv"))).rejects.toThrow();
  });

  it("plans the platform's own command", () => {
    expect(rebootPlan("win32", "shutdown.exe", 90, "Patch")!.argv).toEqual(["shutdown.exe", "/r", "/t", "90", "/d", "p:0:0", "/c", "Patch"]);
    expect(rebootPlan("darwin", "/sbin/shutdown", 61, "")).toEqual({ argv: ["/sbin/shutdown", "-r", "+2"], delaySeconds: 120 });
    expect(rebootPlan("aix", "shutdown", 0, "")).toBeNull();
  });
});

describe("reboot hooks", () => {
  let hooks: string;
  let state: string;
  beforeEach(async () => {
    hooks = path.join(dir, "hooks");
    state = path.join(dir, "state");
    await mkdir(hooks, { mode: 0o755 });
    await chmod(hooks, 0o755);
  });
  // A hook script: records that it ran (with its environment) and does as told.
  async function hook(name: string, body: string, mode = 0o755) {
    const file = path.join(hooks, name);
    await writeFile(file, `#!/bin/sh\necho "$REDFLAG_HOOK_PHASE $REDFLAG_REBOOT_COMMAND_ID $HOME" >> "${dir}/hook-ran"\n${body}\n`);
    await chmod(file, mode);
    return file;
  }
  const ran = async () => (await readFile(path.join(dir, "hook-ran"), "utf8").catch(() => "")).split("\n").map((l) => l.trim()).filter(Boolean);
  const trustAll = () => true;
  const withHooks = (value: Partial<{ force: boolean; preHook: string; postHook: string; hookTimeoutSeconds: number }>, trustedOwner: (uid: number) => boolean = trustAll) =>
    executeCommand(command({ force: true, ...value } as Parameters<typeof command>[0]), {
      agentConfig: undefined,
      aptRefresh: false,
      env: { PATH: dir, HOME: "/root" },
      logger: silentLogger,
      hooksDir: hooks,
      stateDir: state,
      executors: { reboot: createReboot(async () => ({ required: false, by: [], sources: [] }), { trustedOwner }) },
    });

  it("runs the pre-hook (no shell, minimal environment) before scheduling the restart", async () => {
    await fakeShutdown();
    await hook("drain", "echo drained; exit 0");
    const result = await withHooks({ preHook: "drain" });
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    expect(result.message).toMatch(/; pre-hook drain ok: drained$/);
    expect(result.detail).toMatchObject({ case: "reboot", value: { scheduled: true, preHookOutcome: "ok: drained" } });
    // HOME is not passed on; the phase and the command are.
    expect(await ran()).toEqual(["pre r"]);
    expect(await argv()).toEqual(["-r", "+1"]);
  });

  it("cancels the reboot when the pre-hook fails, runs too long, is missing or unsafe, and says why", async () => {
    await fakeShutdown();
    await hook("fails", "echo 'pool still has members' >&2; exit 1");
    await hook("slow", "sleep 30");
    await hook("open", "exit 0", 0o757);
    await hook("group", "exit 0", 0o775);
    await symlink(await hook("real", "exit 0"), path.join(hooks, "linked"));
    const cases: [string, Partial<{ hookTimeoutSeconds: number }>, RegExp, ((uid: number) => boolean)?][] = [
      ["fails", {}, /hook fails failed \(exit status 1\): pool still has members$/],
      ["slow", { hookTimeoutSeconds: 1 }, /hook slow did not finish within 1s and was stopped$/],
      ["missing", {}, /hook .*\/hooks\/missing does not exist$/],
      ["open", {}, /is writable by everyone \(mode 757\); refused$/],
      ["group", {}, /is writable by its group \(mode 775\); refused$/],
      ["linked", {}, /is not a regular file \(a symbolic link\)$/],
      ["real", {}, /belongs to user \d+, not root or the agent's user; refused$/, () => false],
    ];
    for (const [name, extra, why, trusted] of cases) {
      const started = Date.now();
      const result = await withHooks({ preHook: name, ...extra }, trusted);
      expect(result.outcome, name).toBe(CommandOutcome.FAILED);
      expect(result.message, name).toMatch(/^reboot cancelled, the pre-hook did not succeed: /);
      expect(result.message, name).toMatch(why);
      expect(result.detail, name).toMatchObject({ case: "reboot", value: { scheduled: false } });
      expect(Date.now() - started, name).toBeLessThan(10_000);
    }
    // Only the two that were run ran; nothing was scheduled.
    expect(await ran()).toEqual(["pre r", "pre r"]);
    await expect(readFile(path.join(dir, "argv"))).rejects.toThrow();
  });

  it("refuses a hooks directory others may write to, and a name that is a path", async () => {
    await hook("drain", "exit 0");
    await chmod(hooks, 0o777);
    expect(await runHook("drain", { dir: hooks, timeoutSeconds: 5, phase: "pre", commandId: "r", trustedOwner: trustAll })).toEqual({
      ok: false,
      message: `hooks directory ${hooks} is writable by everyone (mode 777); refused`,
    });
    await chmod(hooks, 0o755);
    expect((await runHook("../drain", { dir: hooks, timeoutSeconds: 5, phase: "pre", commandId: "r" })).message).toMatch(/is not a hook name/);
    expect(await ran()).toEqual([]);
  });

  it("keeps the post-hook across the restart, runs it once at the first start after the boot, and keeps its outcome for the status", async () => {
    await fakeShutdown();
    await hook("undrain", "echo back in the pool");
    const result = await withHooks({ postHook: "undrain", hookTimeoutSeconds: 5 });
    expect(result.message).toMatch(/; post-hook undrain runs after the restart$/);
    const kept = await readPostHook(state);
    expect(kept).toMatchObject({ commandId: "r", name: "undrain", timeoutSeconds: 5 });
    expect(kept?.ran).toBeUndefined();
    // The agent restarted without a reboot (boot before the reboot was scheduled): not yet.
    expect(await runPendingPostHook(state, { dir: hooks, trustedOwner: trustAll, bootTime: kept!.scheduledAt - 1000 })).toBeUndefined();
    expect(await ran()).toEqual([]);
    const after = await runPendingPostHook(state, { dir: hooks, trustedOwner: trustAll, bootTime: kept!.scheduledAt + 90_000 });
    expect(after?.ran).toMatchObject({ ok: true, message: "ok: back in the pool" });
    // Once: a later start reports it again without running it.
    expect((await runPendingPostHook(state, { dir: hooks, trustedOwner: trustAll, bootTime: kept!.scheduledAt + 90_000 }))?.ran?.ok).toBe(true);
    expect(await ran()).toEqual(["post r"]);
    // The next reboot command without a post-hook replaces it.
    await withHooks({});
    expect(await readPostHook(state)).toBeUndefined();
  });
});
