import { create } from "@bufbuild/protobuf";
import { CommandOutcome, CommandSchema, EnableHeartbeatSchema } from "@redflag/gen/command_pb";
import { describe, expect, it } from "vitest";
import { createHeartbeat } from "../heartbeat.ts";
import { silentLogger } from "../log.ts";
import { executeCommand } from "./index.ts";

const enable = (intervalSeconds: number, seconds?: bigint) =>
  create(CommandSchema, {
    id: "h",
    sequence: 1n,
    action: { case: "enableHeartbeat", value: create(EnableHeartbeatSchema, { intervalSeconds, ...(seconds !== undefined ? { duration: { seconds } } : {}) }) },
  });

describe("heartbeat commands", () => {
  it("switch heartbeat mode on until the deadline, with defaults, and off again", async () => {
    const heartbeat = createHeartbeat();
    const opts = { agentConfig: undefined, aptRefresh: false, env: process.env, logger: silentLogger, heartbeat };
    const on = await executeCommand(enable(0), opts);
    expect(on.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(on.message).toMatch(/^polling every 5s until /);
    expect(heartbeat.interval(Date.now())).toBe(5);
    expect(heartbeat.interval(Date.now() + 601_000)).toBeUndefined();
    const off = await executeCommand(create(CommandSchema, { id: "o", sequence: 2n, action: { case: "disableHeartbeat", value: {} } }), opts);
    expect(off.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(heartbeat.interval(Date.now())).toBeUndefined();
  });

  it("refuse intervals and durations out of bounds and change nothing", async () => {
    const heartbeat = createHeartbeat();
    const opts = { agentConfig: undefined, aptRefresh: false, env: process.env, logger: silentLogger, heartbeat };
    expect((await executeCommand(enable(61), opts)).message).toMatch(/above the 60s limit/);
    expect((await executeCommand(enable(5, 2n * 86_400n), opts)).outcome).toBe(CommandOutcome.FAILED);
    expect(heartbeat.interval(Date.now())).toBeUndefined();
  });
});
