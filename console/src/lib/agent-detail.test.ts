import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandResultSchema, CommandType, PackageResultState, SubsystemRunState } from "@redflag/gen/command_pb";
import { CommandCreator, CommandInfoSchema, CommandState } from "@redflag/gen/command_service_pb";
import { describe, expect, it } from "vitest";
import { absentSources, actorLabel, durationInput, heartbeatState, isPerson, isPersonName, parseDurationInput, recentlyInstalled } from "./agent-detail.ts";

const now = Date.UTC(2026, 11, 1, 12);
const hb = (type: CommandType, state: CommandState, minutesAgo: number, by: string, untilMin?: number, kind = CommandCreator.PERSON) =>
  create(CommandInfoSchema, {
    id: `${type}-${minutesAgo}`,
    type,
    state,
    createdBy: by,
    createdByKind: kind,
    createTime: timestampFromMs(now - minutesAgo * 60_000),
    result:
      untilMin === undefined
        ? undefined
        : create(CommandResultSchema, { detail: { case: "heartbeat", value: { until: timestampFromMs(now + untilMin * 60_000), intervalSeconds: 5 } } }),
  });

describe("heartbeat from the command history", () => {
  it("is off with nothing in the history", () => {
    expect(heartbeatState([], now)).toMatchObject({ phase: "off", by: "", byKind: CommandCreator.UNSPECIFIED, byPerson: false, command: undefined });
  });

  it("follows the latest enable or disable, whatever the list order", () => {
    const on = hb(CommandType.ENABLE_HEARTBEAT, CommandState.SUCCEEDED, 5, "ana", 5);
    const off = hb(CommandType.DISABLE_HEARTBEAT, CommandState.PENDING, 1, "bob");
    const scan = hb(CommandType.SCAN_UPDATES, CommandState.SUCCEEDED, 0, "carol");
    expect(heartbeatState([on, scan], now)).toMatchObject({ phase: "on", by: "ana", byKind: CommandCreator.PERSON, byPerson: true, intervalSeconds: 5 });
    expect(heartbeatState([on, off, scan], now)).toMatchObject({ phase: "turning-off", by: "bob" });
  });

  it("is over once the reported time has passed, and off when the enable failed", () => {
    expect(heartbeatState([hb(CommandType.ENABLE_HEARTBEAT, CommandState.SUCCEEDED, 30, "ana", -20)], now).phase).toBe("expired");
    expect(heartbeatState([hb(CommandType.ENABLE_HEARTBEAT, CommandState.TIMED_OUT, 30, "ana")], now).phase).toBe("failed");
    expect(heartbeatState([hb(CommandType.ENABLE_HEARTBEAT, CommandState.SENT, 1, "admin.key", undefined, CommandCreator.ADMIN_KEY)], now)).toMatchObject({ phase: "turning-on", byPerson: false });
  });

  it("takes who started it from the recorded kind, not from the name", () => {
    const byToken = hb(CommandType.ENABLE_HEARTBEAT, CommandState.SENT, 1, "build-key", undefined, CommandCreator.API_TOKEN);
    expect(heartbeatState([byToken], now)).toMatchObject({ by: "build-key", byKind: CommandCreator.API_TOKEN, byPerson: true });
    const bySystem = hb(CommandType.DISABLE_HEARTBEAT, CommandState.SENT, 1, "ana", undefined, CommandCreator.SYSTEM);
    expect(heartbeatState([bySystem], now)).toMatchObject({ byPerson: false });
    const old = hb(CommandType.ENABLE_HEARTBEAT, CommandState.SENT, 1, "deploy-key", undefined, CommandCreator.UNSPECIFIED);
    expect(heartbeatState([old], now)).toMatchObject({ byKind: CommandCreator.UNSPECIFIED, byPerson: false });
  });
});

describe("who queued a command", () => {
  it("tells people from keys and the control plane by the recorded kind", () => {
    expect(isPerson("build-key", CommandCreator.PERSON)).toBe(true);
    expect(isPerson("build-key", CommandCreator.API_TOKEN)).toBe(true);
    expect(isPerson("ana", CommandCreator.ADMIN_KEY)).toBe(false);
    expect(isPerson("ana", CommandCreator.SYSTEM)).toBe(false);
    expect(actorLabel("build-key", CommandCreator.PERSON)).toBe("build-key");
    expect(actorLabel("build-key", CommandCreator.API_TOKEN)).toBe("build-key");
    expect(actorLabel("admin.key", CommandCreator.ADMIN_KEY)).toBe("the system (admin.key)");
    expect(actorLabel("system", CommandCreator.SYSTEM)).toBe("the system");
  });

  it("falls back to the name for commands recorded before the kind was", () => {
    expect(isPerson("ana", CommandCreator.UNSPECIFIED)).toBe(true);
    expect(isPerson("build-key", CommandCreator.UNSPECIFIED)).toBe(false);
    expect(isPersonName("ana")).toBe(true);
    expect(isPersonName("j.doe")).toBe(true);
    expect(isPersonName("admin.key")).toBe(false);
    expect(isPersonName("admin-key")).toBe(false);
    expect(isPersonName("system")).toBe(false);
    expect(actorLabel("ana", CommandCreator.UNSPECIFIED)).toBe("ana");
    expect(actorLabel("system", CommandCreator.UNSPECIFIED)).toBe("the system");
    expect(actorLabel("admin.key", CommandCreator.UNSPECIFIED)).toBe("the system (admin.key)");
  });
});

describe("duration fields", () => {
  it("read the control plane's syntax or plain seconds, and write the shortest exact form", () => {
    expect(parseDurationInput(" 6h ")).toBe(21_600);
    expect(parseDurationInput("300")).toBe(300);
    expect(parseDurationInput("soon")).toBeUndefined();
    expect(durationInput(21_600)).toBe("6h");
    expect(durationInput(900)).toBe("15m");
    expect(durationInput(90)).toBe("90s");
    expect(durationInput(172_800)).toBe("2d");
  });
});

describe("package sources not on the host", () => {
  const scan = (id: string, runs: [string, SubsystemRunState][]) =>
    create(CommandInfoSchema, {
      id,
      type: CommandType.SCAN_UPDATES,
      state: CommandState.SUCCEEDED,
      result: create(CommandResultSchema, {
        detail: { case: "scanUpdates", value: { subsystems: runs.map(([subsystem, state]) => ({ subsystem, state })) } },
      }),
    });

  it("takes each source from the newest scan that ran it, and ignores other commands", () => {
    const newest = scan("2", [["apt", SubsystemRunState.RAN], ["dnf", SubsystemRunState.NOT_PRESENT]]);
    // An older scan saw snap missing and docker there; docker has since gone.
    const older = scan("1", [["snap", SubsystemRunState.NOT_PRESENT], ["docker", SubsystemRunState.RAN], ["zypper", SubsystemRunState.NOT_PRESENT]]);
    const docker = scan("3", [["docker", SubsystemRunState.NOT_PRESENT]]);
    const reboot = create(CommandInfoSchema, { id: "r", type: CommandType.REBOOT, state: CommandState.SUCCEEDED });
    expect(absentSources([docker, reboot, newest, older])).toEqual(["dnf", "docker", "snap", "zypper"]);
    // A source that was missing and is now there is no longer absent.
    expect(absentSources([scan("4", [["dnf", SubsystemRunState.RAN]]), newest])).toEqual([]);
    expect(absentSources([])).toEqual([]);
  });
});

describe("packages installed recently", () => {
  const done = (id: string, minutesAgo: number, kind: "installUpdates" | "rollbackUpdate" | "dryRunUpdate", packages: [string, string, string, PackageResultState][]) =>
    create(CommandInfoSchema, {
      id,
      type: CommandType.INSTALL_UPDATES,
      state: CommandState.SUCCEEDED,
      finishTime: timestampFromMs(Date.now() - minutesAgo * 60_000),
      result: create(CommandResultSchema, {
        detail:
          kind === "dryRunUpdate"
            ? { case: kind, value: { changes: packages.map(([name, from, to]) => ({ source: "apt", name, fromVersion: from, toVersion: to })) } }
            : { case: kind, value: { packages: packages.map(([name, from, to, state]) => ({ source: "apt", name, architecture: "amd64", fromVersion: from, toVersion: to, state })) } },
      }),
    });

  it("lists each installed package once at its latest change, newest first, and nothing a dry run or a failure reported", () => {
    const list = recentlyInstalled([
      done("c3", 5, "rollbackUpdate", [["curl", "2", "1", PackageResultState.INSTALLED]]),
      done("c2", 60, "installUpdates", [["curl", "1", "2", PackageResultState.INSTALLED], ["openssl", "3.0", "3.1", PackageResultState.INSTALLED], ["zlib1g", "1", "2", PackageResultState.FAILED]]),
      done("c1", 90, "dryRunUpdate", [["nginx", "1", "2", PackageResultState.UNSPECIFIED]]),
    ]);
    expect(list.map((p) => [p.name, p.fromVersion, p.toVersion, p.commandId])).toEqual([
      ["curl", "2", "1", "c3"],
      ["openssl", "3.0", "3.1", "c2"],
    ]);
  });
});
