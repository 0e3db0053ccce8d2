import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { isSubsystem, SUBSYSTEMS } from "@redflag/common/sources";
import { CommandType, UpdateSeverity, type DiskInfo } from "@redflag/gen/command_pb";
import { CommandCreator, CommandInfoSchema, CommandService, CommandState, WatchEventsResponseSchema, type CommandInfo, type WatchEventsResponse } from "@redflag/gen/command_service_pb";
import { OsFamily, SubsystemConfigSchema, type SubsystemConfig } from "@redflag/gen/common_pb";
import { AgentHealth, AgentSchema, FleetService, type Agent } from "@redflag/gen/fleet_service_pb";
import { MetricSampleSchema, ReportService, type MetricSample } from "@redflag/gen/report_service_pb";
import { FleetUpdateSchema, UpdateService, UpdateStatus, type FleetUpdate, type Hold } from "@redflag/gen/update_service_pb";
import { agentDecommissioned, checkCancellable, checkRetryable, checkRollback, checkSelection, checkTags, checkVersionListing, notFound } from "./server-rules.ts";

// An in-memory control plane for the agent page's tests: one agent and what the real services
// would answer about it, with the same error codes and messages (control-plane/src/services),
// and a record of every request that changes something.

export const AGENT_ID = "3f2b8c1e-5d4a-4e6b-9c7d-1a2b3c4d5e6f";
export const MACHINE_ID = "ab".repeat(32);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const invalid = (m: string) => new ConnectError(m, Code.InvalidArgument);
const uuid = (field: string, v: string) => {
  if (!UUID.test(v)) throw invalid(`${field} must be a UUID (got "${v.slice(0, 64)}")`);
  return v;
};

export const defaultSubsystem = (name: string) =>
  create(SubsystemConfigSchema, {
    name,
    enabled: true,
    autoRun: true,
    intervalSeconds: name === "system" ? 900 : name === "storage" ? 3600 : 21_600,
    timeoutSeconds: 900,
    circuitBreaker: { failureThreshold: 3, windowSeconds: 3600, cooldownSeconds: 1800 },
  });

const MIN = 60_000;
export const ago = (ms: number) => timestampFromMs(Date.now() - ms);

type Fields<T> = Omit<Partial<T>, "$typeName" | "$unknown">;

export function command(init: Fields<CommandInfo> & { type: CommandType; state: CommandState }): CommandInfo {
  return create(CommandInfoSchema, { id: crypto.randomUUID(), agentId: AGENT_ID, createdBy: "ana", createdByKind: CommandCreator.PERSON, createTime: ago(5 * MIN), ...init });
}

export function disk(mountPoint: string, size: number, used: number, extra: Partial<DiskInfo> = {}): DiskInfo {
  return { $typeName: "redflag.v1.DiskInfo", mountPoint, device: `/dev/sd${mountPoint.length}`, fsType: "ext4", sizeBytes: BigInt(size), usedBytes: BigInt(used), inodesTotal: 1000n, inodesUsed: 250n, ...extra };
}

export function sample(minutesAgo: number, cpu: number, memUsedGiB: number, disks: DiskInfo[] = []): MetricSample {
  const GiB = 2 ** 30;
  return create(MetricSampleSchema, {
    time: ago(minutesAgo * MIN),
    system: {
      cpuUsagePercent: cpu,
      cpuCores: 4,
      memoryTotalBytes: BigInt(8 * GiB),
      memoryUsedBytes: BigInt(memUsedGiB * GiB),
      memoryAvailableBytes: BigInt((8 - memUsedGiB) * GiB),
      swapTotalBytes: BigInt(2 * GiB),
      swapUsedBytes: 0n,
      loadAverage: [0.42, 0.3, 0.25],
      uptimeSeconds: 3n * 86_400n + 4n * 3600n,
      rebootRequired: true,
      rebootRequiredBy: ["linux-image-amd64"],
    },
    storage: disks.length ? { disks } : undefined,
  });
}

export function update(name: string, init: Fields<FleetUpdate> = {}, severity = UpdateSeverity.SECURITY): FleetUpdate {
  return create(FleetUpdateSchema, {
    agentId: AGENT_ID,
    hostname: "web-1",
    status: UpdateStatus.PENDING,
    update: { source: "apt", name, architecture: "amd64", currentVersion: "1.0-1", availableVersion: "1.0-2", repository: "bookworm-security", severity, security: true },
    firstSeenTime: ago(60 * MIN),
    ...init,
  });
}

export interface FakeOptions {
  agent?: Fields<Agent>;
  missing?: boolean;
  samples?: MetricSample[];
  commands?: CommandInfo[];
  updates?: FleetUpdate[];
  holds?: Hold[];
  overrides?: SubsystemConfig[];
  // Who the caller is, as the server names it in created_by, and the kind of credential it
  // signed in with (created_by_kind).
  caller?: string;
  callerKind?: CommandCreator;
}

export function fakeServer(opts: FakeOptions = {}) {
  const agent = create(AgentSchema, {
    id: AGENT_ID,
    hostname: "web-1",
    machineId: MACHINE_ID,
    os: { family: OsFamily.LINUX, name: "Debian GNU/Linux", version: "12 (bookworm)", kernel: "6.1.0-18-amd64", arch: "x86_64" },
    agentVersion: "0.4.2",
    health: AgentHealth.ONLINE,
    registerTime: ago(30 * 86_400_000),
    lastSeenTime: ago(20_000),
    lastScanTime: ago(10 * MIN),
    tags: ["web"],
    group: "prod",
    ...opts.agent,
  });
  const state = {
    agent,
    overrides: [...(opts.overrides ?? [])],
    commands: [...(opts.commands ?? [])],
    updates: [...(opts.updates ?? [])],
    samples: opts.samples ?? [],
    holds: opts.holds ?? [],
  };
  const caller = opts.caller ?? "ana";
  const callerKind = opts.callerKind ?? CommandCreator.PERSON;
  // CreateCommand answers these with errors, as the real one would (a blackout, say), in order.
  const refusals: ConnectError[] = [];
  // Requests that change something, in order, as [method, request].
  const calls: [string, unknown][] = [];
  // The live feed: push() sends a command change to every open WatchEvents stream.
  const watchers = new Set<(e: WatchEventsResponse | Error) => void>();
  let streamsOpened = 0;
  const publish = (c: CommandInfo) => {
    const event = create(WatchEventsResponseSchema, { kind: "command", command: c, time: timestampFromMs(Date.now()) });
    for (const w of watchers) w(event);
  };

  const existing = (agentId: string) => {
    uuid("agent_id", agentId);
    if (opts.missing || agentId !== AGENT_ID) throw notFound("agent", agentId);
    return state.agent;
  };
  const active = (agentId: string) => {
    const a = existing(agentId);
    if (a.health === AgentHealth.DECOMMISSIONED) throw agentDecommissioned(agentId);
    return a;
  };
  const queue = (type: CommandType): CommandInfo => {
    const c = command({ type, state: CommandState.PENDING, createdBy: caller, createdByKind: callerKind, createTime: timestampFromMs(Date.now()) });
    state.commands.unshift(c);
    publish(c);
    return c;
  };
  const config = () => {
    const own = new Map(state.overrides.map((o) => [o.name, o]));
    return { revision: 7n, pollIntervalSeconds: 300, pollJitterPercent: 10, commandTimeoutSeconds: 900, subsystems: SUBSYSTEMS.map((n) => own.get(n) ?? defaultSubsystem(n)), holds: [] };
  };

  function routes(router: ConnectRouter) {
    router.service(FleetService, {
      getAgent: (req) => ({ agent: existing(req.agentId) }),
      getAgentConfig: (req) => (existing(req.agentId), { config: config(), overrides: state.overrides }),
      setAgentLabels(req) {
        calls.push(["setAgentLabels", req]);
        existing(req.agentId);
        const tags = checkTags(req.tags);
        state.agent = create(AgentSchema, { ...state.agent, tags, group: req.group.trim().toLowerCase() });
        return { agent: state.agent };
      },
      updateSubsystems(req) {
        calls.push(["updateSubsystems", req]);
        active(req.agentId);
        req.subsystems.forEach((s, i) => {
          const field = `subsystems[${i}]`;
          if (!isSubsystem(s.name)) throw invalid(`${field}.name "${s.name}" is not a subsystem (${SUBSYSTEMS.join(", ")})`);
          if (s.autoRun && (s.intervalSeconds < 300 || s.intervalSeconds > 7 * 86_400)) throw invalid(`${field}.interval_seconds must be from 300 to 604800 when auto_run is on`);
          if (s.timeoutSeconds < 10 || s.timeoutSeconds > 6 * 3600) throw invalid(`${field}.timeout_seconds must be from 10 to 21600`);
        });
        state.overrides = req.subsystems.map((s) => create(SubsystemConfigSchema, s));
        return { config: config() };
      },
      triggerScan(req) {
        calls.push(["triggerScan", req]);
        active(req.agentId);
        return { command: queue(CommandType.SCAN_UPDATES) };
      },
      setHeartbeat(req) {
        calls.push(["setHeartbeat", req]);
        active(req.agentId);
        if (!req.enabled) return { command: queue(CommandType.DISABLE_HEARTBEAT) };
        if (req.intervalSeconds > 60) throw invalid("interval_seconds must be at most 60");
        const ms = req.duration ? durationMs(req.duration) : 600_000;
        if (ms < 10_000 || ms > 86_400_000) throw invalid("duration must be from 10 seconds to 24 hours");
        return { command: queue(CommandType.ENABLE_HEARTBEAT) };
      },
      rebootAgent(req) {
        calls.push(["rebootAgent", req]);
        active(req.agentId);
        if (req.delaySeconds > 7 * 86_400) throw invalid("reboot.delay_seconds must be at most 604800 (7 days)");
        return { command: queue(CommandType.REBOOT) };
      },
      decommissionAgent(req) {
        calls.push(["decommissionAgent", req]);
        const before = existing(req.agentId);
        if (before.health === AgentHealth.DECOMMISSIONED) return { agent: before, cancelledCommands: 0 };
        let cancelled = 0;
        state.commands = state.commands.map((c) => {
          if (c.state !== CommandState.PENDING) return c;
          cancelled++;
          return create(CommandInfoSchema, { ...c, state: CommandState.CANCELLED, finishTime: timestampFromMs(Date.now()) });
        });
        state.updates = [];
        state.agent = create(AgentSchema, { ...before, health: AgentHealth.DECOMMISSIONED });
        return { agent: state.agent, cancelledCommands: cancelled };
      },
      rebindMachineId(req) {
        calls.push(["rebindMachineId", req]);
        const before = active(req.agentId);
        if (!/^[0-9a-f]{64}$/.test(req.machineId)) throw invalid("machine_id must be 64 lower-case hex characters (the agent prints it in `redflag-agent status`)");
        state.agent = create(AgentSchema, { ...before, machineId: req.machineId });
        return { agent: state.agent };
      },
      allowReregistration(req) {
        calls.push(["allowReregistration", req]);
        const before = existing(req.agentId);
        const seconds = req.validFor ? durationMs(req.validFor) / 1000 : 3600;
        if (!(seconds >= 60 && seconds <= 7 * 86_400)) throw invalid("valid_for must be from 1 minute to 7 days");
        const allowedUntil = timestampFromMs(Date.now() + seconds * 1000);
        state.agent = create(AgentSchema, { ...before, reregistrationAllowedUntil: allowedUntil });
        return { agent: state.agent, allowedUntil };
      },
    });
    router.service(ReportService, {
      getFleetOverview: () => ({}),
      listAgentMetrics(req) {
        uuid("agent_id", req.agentId);
        if (req.limit > 1000) throw invalid("limit must be from 1 to 1000 (0 means 288)");
        existing(req.agentId);
        return { samples: state.samples };
      },
    });
    router.service(UpdateService, {
      listUpdates(req) {
        const ids = req.filter?.agentIds ?? [];
        ids.forEach((id, i) => uuid(`selection.agent_ids[${i}]`, id));
        const rows = state.updates.filter((u) => ids.length === 0 || ids.includes(u.agentId));
        return { updates: rows, total: rows.length, nextPageToken: "" };
      },
      installApprovedUpdates(req) {
        calls.push(["installApprovedUpdates", req]);
        const sel = req.selection;
        checkSelection(sel);
        const picked = state.updates.filter(
          (u) =>
            (sel.agentIds.length === 0 || sel.agentIds.includes(u.agentId)) &&
            (sel.keys.length === 0 || sel.keys.some((k) => k.agentId === u.agentId && k.source === u.update?.source && k.name === u.update?.name && k.architecture === u.update?.architecture)),
        );
        const chosen = picked.filter((u) => !u.held && (u.status === UpdateStatus.APPROVED || (req.approve && u.status === UpdateStatus.PENDING)));
        if (chosen.length === 0) return { commands: [], packages: 0 };
        const c = queue(CommandType.INSTALL_UPDATES);
        state.updates = state.updates.map((u) =>
          chosen.includes(u) ? create(FleetUpdateSchema, { ...u, status: UpdateStatus.APPROVED, installCommandId: c.id, installCommandState: CommandState.PENDING }) : u,
        );
        return { commands: [c], packages: chosen.length };
      },
      listHolds: (req) => (uuid("agent_id", req.agentId), { holds: state.holds }),
    });
    router.service(CommandService, {
      // Only the kinds the agent page queues through CreateCommand.
      createCommand(req) {
        calls.push(["createCommand", req]);
        active(req.agentId);
        const refused = refusals.shift();
        if (refused) throw refused;
        if (req.action.case === "listPackageVersions") {
          checkVersionListing(req.action.value.packages);
          return { command: queue(CommandType.LIST_PACKAGE_VERSIONS), merged: false };
        }
        if (req.action.case === "rollbackUpdate") {
          checkRollback(req.action.value.package, req.action.value.targetVersion);
          return { command: queue(CommandType.ROLLBACK_UPDATE), merged: false };
        }
        throw invalid(`the test server does not queue ${req.action.case ?? "nothing"}`);
      },
      getCommand(req) {
        const c = state.commands.find((x) => x.id === req.id);
        if (!c) throw notFound("command", req.id);
        return { command: c };
      },
      listCommands(req) {
        if (req.agentId) uuid("agent_id", req.agentId);
        return { commands: state.commands.filter((c) => !req.agentId || c.agentId === req.agentId), nextPageToken: "" };
      },
      cancelCommand(req) {
        calls.push(["cancelCommand", req]);
        const c = state.commands.find((x) => x.id === req.id);
        if (!c) throw notFound("command", req.id);
        checkCancellable(c);
        const done = create(CommandInfoSchema, { ...c, state: CommandState.CANCELLED, finishTime: timestampFromMs(Date.now()) });
        state.commands = state.commands.map((x) => (x.id === c.id ? done : x));
        publish(done);
        return { command: done };
      },
      retryCommand(req) {
        calls.push(["retryCommand", req]);
        const c = state.commands.find((x) => x.id === req.id);
        if (!c) throw notFound("command", req.id);
        checkRetryable(c);
        return { command: queue(c.type) };
      },
      async *watchEvents(req, ctx) {
        if (req.agentId) uuid("agent_id", req.agentId);
        streamsOpened++;
        const pending: (WatchEventsResponse | Error)[] = [];
        let wake: (() => void) | undefined;
        const listener = (e: WatchEventsResponse | Error) => {
          pending.push(e);
          wake?.();
        };
        watchers.add(listener);
        ctx.signal.addEventListener("abort", () => wake?.());
        try {
          yield { kind: "keepalive", time: timestampFromMs(Date.now()) };
          while (!ctx.signal.aborted) {
            if (pending.length === 0) await new Promise<void>((resolve) => (wake = resolve));
            for (const e of pending.splice(0)) {
              if (e instanceof Error) throw e;
              if (!req.agentId || e.command?.agentId === req.agentId) yield e;
            }
          }
        } finally {
          watchers.delete(listener);
        }
      },
    });
  }

  return {
    routes,
    state,
    calls,
    // A command changed (the agent reported, say): stored and sent on the live feed.
    change(c: CommandInfo) {
      state.commands = [c, ...state.commands.filter((x) => x.id !== c.id)];
      publish(c);
    },
    // The next CreateCommand is refused with this error.
    refuseNext(err: ConnectError) {
      refusals.push(err);
    },
    // The feed breaks, as when the control plane restarts.
    breakFeeds() {
      for (const w of watchers) w(new ConnectError("the server is restarting", Code.Unavailable));
    },
    get streamsOpened() {
      return streamsOpened;
    },
    get liveStreams() {
      return watchers.size;
    },
  };
}
