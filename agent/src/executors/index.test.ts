import { create } from "@bufbuild/protobuf";
import { AgentConfigSchema } from "@redflag/gen/common_pb";
import {
  CollectSpecsSchema,
  type Command,
  CommandOutcome,
  CommandSchema,
  InstallUpdatesSchema,
  ScanUpdatesSchema,
} from "@redflag/gen/command_pb";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../log.ts";
import { runProcess } from "../run-process.ts";
import { executeCommand, type ExecuteOptions } from "./index.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-exec-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const command = (action: Command["action"], timeoutSeconds = 0) =>
  create(CommandSchema, { id: "c-1", sequence: 4n, timeoutSeconds, action });
const options = (extra: Partial<ExecuteOptions> = {}): ExecuteOptions => ({
  agentConfig: undefined,
  aptRefresh: false,
  env: process.env,
  logger: silentLogger,
  ...extra,
});

describe("executeCommand", () => {
  it("fails kinds this agent cannot run yet, naming them", async () => {
    const result = await executeCommand(command({ case: "installUpdates", value: create(InstallUpdatesSchema, { sources: ["apt"] }) }), options({ executors: {} }));
    expect(result).toMatchObject({
      commandId: "c-1",
      sequence: 4n,
      outcome: CommandOutcome.FAILED,
      message: "install_updates is not supported by this agent yet",
    });
    expect(result.startTime && result.finishTime).toBeTruthy();
  });

  it("fails a command without a known action", async () => {
    const result = await executeCommand(command({ case: undefined }), options());
    expect(result.outcome).toBe(CommandOutcome.FAILED);
  });

  it("turns an executor exception into a FAILED result", async () => {
    const result = await executeCommand(
      command({ case: "collectSpecs", value: create(CollectSpecsSchema) }),
      options({ executors: { collectSpecs: async () => { throw new Error("disk on fire"); } } }),
    );
    expect(result).toMatchObject({ outcome: CommandOutcome.FAILED, message: "collect_specs failed: disk on fire" });
  });

  it("stops a hung executor at the command's timeout and kills its child", async () => {
    const pidFile = path.join(dir, "hung.pid");
    const hang = path.join(dir, "hang");
    await writeFile(hang, `#!/bin/sh\necho $$ > "$1"\nexec sleep 300\n`);
    await chmod(hang, 0o755);
    let childGone: Promise<unknown> | undefined;
    const started = Date.now();
    const result = await executeCommand(command({ case: "scanUpdates", value: create(ScanUpdatesSchema) }, 1), options({
      executors: {
        scanUpdates: async (ctx) => {
          childGone = runProcess([hang, pidFile], { timeoutMs: 600_000, signal: ctx.signal, killGraceMs: 100 });
          await childGone;
          // Ignores the abort on purpose: the limit must not depend on the executor's cooperation.
          await new Promise(() => {});
          throw new Error("unreachable");
        },
      },
    }));
    expect(result).toMatchObject({ outcome: CommandOutcome.FAILED, message: "scan_updates timed out after 1s" });
    expect(Date.now() - started).toBeLessThan(5000);
    const outcome = (await childGone) as { aborted: boolean };
    expect(outcome.aborted).toBe(true);
    const pid = Number((await readFile(pidFile, "utf8")).trim());
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it("uses the agent config's timeout when the command has none", async () => {
    const result = await executeCommand(command({ case: "collectSpecs", value: create(CollectSpecsSchema) }), options({
      agentConfig: create(AgentConfigSchema, { commandTimeoutSeconds: 1 }),
      executors: { collectSpecs: () => new Promise(() => {}) },
    }));
    expect(result.message).toBe("collect_specs timed out after 1s");
  });

  it("ends a running command as FAILED when the agent stops", async () => {
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 100);
    const result = await executeCommand(command({ case: "collectSpecs", value: create(CollectSpecsSchema) }), options({
      stopSignal: stop.signal,
      executors: { collectSpecs: () => new Promise(() => {}) },
    }));
    expect(result).toMatchObject({ outcome: CommandOutcome.FAILED, message: "agent stopped before the command finished" });
  });
});
