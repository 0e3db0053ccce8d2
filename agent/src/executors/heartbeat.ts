import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, HeartbeatResultSchema } from "@redflag/gen/command_pb";
import type { Executor } from "./types.ts";

const DEFAULT_INTERVAL_SECONDS = 5;
const MAX_INTERVAL_SECONDS = 60;
const DEFAULT_DURATION_SECONDS = 10 * 60;
const MAX_DURATION_SECONDS = 24 * 3600;

export const enableHeartbeat: Executor = async (ctx) => {
  if (ctx.command.action.case !== "enableHeartbeat") throw new Error("not an enable_heartbeat command");
  const { intervalSeconds, duration } = ctx.command.action.value;
  const interval = intervalSeconds || DEFAULT_INTERVAL_SECONDS;
  const seconds = duration ? Number(duration.seconds) + duration.nanos / 1e9 : DEFAULT_DURATION_SECONDS;
  if (interval > MAX_INTERVAL_SECONDS) {
    return { outcome: CommandOutcome.FAILED, message: `heartbeat interval ${interval}s is above the ${MAX_INTERVAL_SECONDS}s limit` };
  }
  if (!(seconds > 0 && seconds <= MAX_DURATION_SECONDS)) {
    return { outcome: CommandOutcome.FAILED, message: `heartbeat duration must be more than 0 and at most ${MAX_DURATION_SECONDS}s` };
  }
  const until = Date.now() + Math.round(seconds * 1000);
  ctx.heartbeat.enable(until, interval);
  return {
    outcome: CommandOutcome.SUCCEEDED,
    message: `polling every ${interval}s until ${new Date(until).toISOString()}`,
    detail: { case: "heartbeat", value: create(HeartbeatResultSchema, { until: timestampFromMs(until), intervalSeconds: interval }) },
  };
};

export const disableHeartbeat: Executor = async (ctx) => {
  ctx.heartbeat.disable();
  return {
    outcome: CommandOutcome.SUCCEEDED,
    message: "heartbeat off; polling at the configured interval",
    detail: { case: "heartbeat", value: create(HeartbeatResultSchema, {}) },
  };
};
