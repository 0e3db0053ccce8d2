import { create } from "@bufbuild/protobuf";
import { CommandOutcome, CommandSchema, RebootSchema } from "@redflag/gen/command_pb";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../log.ts";
import { executeCommand } from "./index.ts";
import { createReboot, rebootPlan } from "./reboot.ts";

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
