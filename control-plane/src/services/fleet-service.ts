import { create, toBinary, toJson } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { AgentConfigSchema, OsFamily, SubsystemConfigSchema, type SubsystemConfig } from "@redflag/gen/common_pb";
import { AgentHealth, AgentSort, FleetService } from "@redflag/gen/fleet_service_pb";
import type { AgentRegistry } from "../auth/agent-registry.ts";
import type { Config } from "../config.ts";
import { isMachineId, isUuid } from "../ids.ts";
import type { LastSeenBuffer } from "../cluster/last-seen.ts";
import { findAgents, type AgentFilter, type AgentOrder, type AgentRow } from "../store/agents.ts";
import type { Prisma } from "../store/types.ts";
import { SUBSYSTEMS, type AgentConfigs } from "../domain/agent-config.ts";
import {
  activeAgent,
  allowAgentReregistration,
  decommission,
  existingAgent,
  rebindMachineId,
  relabelAgent,
  setSubsystemOverrides,
  subsystemOverrides,
  withBufferedLastSeen,
} from "../domain/agents.ts";
import type { CommandQueue } from "../domain/commands.ts";
import { audit, callerName } from "./audit.ts";
import type { Settings } from "../settings.ts";
import { healthCutoffs } from "../domain/health.ts";
import { agentToProto, commandCaller, commandToProto, HEALTH_NAMES } from "./convert.ts";
import { invalid, nextPageToken, pageSize, pageToken, text, uuid } from "./validate.ts";
import { LABEL, LABEL_RULE, MAX_TAGS, normaliseLabel, normaliseTags } from "@redflag/common/labels";

export interface FleetServiceDeps {
  config: Config;
  db: Prisma;
  lastSeen: LastSeenBuffer;
  agents: AgentRegistry;
  agentConfigs: AgentConfigs;
  commands: CommandQueue;
  settings: Settings;
}

const FAMILY_NAMES: Record<number, string> = { [OsFamily.LINUX]: "linux", [OsFamily.WINDOWS]: "windows", [OsFamily.DARWIN]: "darwin" };
const SORTS = new Map<AgentSort, AgentOrder["by"]>([
  [AgentSort.UNSPECIFIED, "hostname"],
  [AgentSort.HOSTNAME, "hostname"],
  [AgentSort.LAST_SEEN, "last_seen"],
  [AgentSort.REGISTERED, "registered"],
]);

export function createFleetService(deps: FleetServiceDeps): ServiceImpl<typeof FleetService> {
  const { db, lastSeen } = deps;
  // Health is measured in poll intervals, as the admin set them.
  const interval = () => deps.settings.pollIntervalSeconds;
  const proto = (row: AgentRow) => agentToProto(withBufferedLastSeen(row, lastSeen), new Date(), interval(), deps.settings.minimumAgentVersion);
  const existing = (agentId: string) => existingAgent(db, uuid("agent_id", agentId));
  const active = (agentId: string) => activeAgent(db, uuid("agent_id", agentId));

  const queue = async (ctx: HandlerContext, agentId: string, action: Parameters<CommandQueue["queue"]>[2]) => commandToProto(await deps.commands.queue(commandCaller(ctx), agentId, action));

  return {
    async listAgents(req) {
      const filter: AgentFilter = {};
      if (req.health !== AgentHealth.UNSPECIFIED) {
        const name = HEALTH_NAMES.get(req.health);
        if (!name) throw invalid(`health ${req.health} is not an agent health`);
        filter.health = { name, cutoffs: healthCutoffs(new Date(), interval()) };
      }
      if (req.osFamily !== OsFamily.UNSPECIFIED) {
        const family = FAMILY_NAMES[req.osFamily];
        if (!family) throw invalid(`os_family ${req.osFamily} is not an OS family`);
        filter.osFamily = family;
      }
      if (req.tag) filter.tag = text("tag", req.tag, { max: 63 });
      if (req.group) filter.group = text("group", req.group, { max: 63 });
      if (req.search) {
        const q = text("search", req.search.trim(), { max: 100 });
        filter.search = { text: q, id: isUuid(q) ? q : undefined };
      }
      if (req.hostname) filter.hostname = text("hostname", req.hostname.trim(), { max: 253, required: true });
      if (req.agentIds.length > 0) {
        if (req.agentIds.length > 500) throw invalid("agent_ids holds at most 500 IDs");
        filter.agentIds = req.agentIds.map((id, i) => uuid(`agent_ids[${i}]`, id));
      }
      if (req.rebootRequired) filter.rebootRequired = true;
      const by = SORTS.get(req.sort);
      if (!by) throw invalid(`sort ${req.sort} is not an agent sort`);
      const { rows, next } = await findAgents(db, pageSize(req.pageSize), pageToken(req.pageToken), filter, { by, descending: req.descending });
      return { agents: rows.map(proto), nextPageToken: nextPageToken(next) };
    },

    async getAgent(req) {
      return { agent: proto(await existing(req.agentId)) };
    },

    async setAgentLabels(req, ctx) {
      const before = await existing(req.agentId);
      if (req.tags.length > MAX_TAGS) throw invalid(`at most ${MAX_TAGS} tags`);
      const tags = normaliseTags(req.tags);
      for (const tag of tags) if (!LABEL.test(tag)) throw invalid(`tag "${tag.slice(0, 64)}" must be ${LABEL_RULE}`);
      const group = normaliseLabel(req.group);
      if (group && !LABEL.test(group)) throw invalid(`group "${group.slice(0, 64)}" must be ${LABEL_RULE}`);
      const after = await relabelAgent(db, before, { tags, group }, (tx) =>
        audit(tx, ctx, { target: `agent:${before.id}`, before: { tags: before.tags, group: before.group }, after: { tags, group } }),
      );
      return { agent: proto(after) };
    },

    async getAgentConfig(req) {
      const row = await existing(req.agentId);
      return { config: await deps.agentConfigs.forAgent(row.id), overrides: await subsystemOverrides(db, row.id) };
    },

    async updateSubsystems(req, ctx) {
      const row = await active(req.agentId);
      const seen = new Set<string>();
      const subsystems: SubsystemConfig[] = req.subsystems.map((s, i) => {
        const field = `subsystems[${i}]`;
        if (!(SUBSYSTEMS as readonly string[]).includes(s.name)) throw invalid(`${field}.name "${s.name.slice(0, 64)}" is not a subsystem (${SUBSYSTEMS.join(", ")})`);
        if (seen.has(s.name)) throw invalid(`${field}: ${s.name} is listed twice`);
        seen.add(s.name);
        if (s.autoRun && (s.intervalSeconds < 300 || s.intervalSeconds > 7 * 86_400)) throw invalid(`${field}.interval_seconds must be from 300 to 604800 when auto_run is on`);
        if (s.timeoutSeconds < 10 || s.timeoutSeconds > 6 * 3600) throw invalid(`${field}.timeout_seconds must be from 10 to 21600`);
        const b = s.circuitBreaker;
        if (b && b.failureThreshold > 0 && (b.failureThreshold > 100 || b.windowSeconds < 60 || b.cooldownSeconds < 60)) {
          throw invalid(`${field}.circuit_breaker needs failure_threshold 1..100, window_seconds and cooldown_seconds of at least 60 (or failure_threshold 0 to turn it off)`);
        }
        return create(SubsystemConfigSchema, s);
      });
      const stored = subsystems.length > 0 ? toBinary(AgentConfigSchema, create(AgentConfigSchema, { subsystems })) : null;
      await setSubsystemOverrides(db, deps.agentConfigs, row.id, stored, (tx, before) =>
        audit(tx, ctx, {
          target: `agent:${row.id}`,
          before: before.map((s) => toJson(SubsystemConfigSchema, s)),
          after: subsystems.map((s) => toJson(SubsystemConfigSchema, s)),
        }),
      );
      return { config: await deps.agentConfigs.forAgent(row.id) };
    },

    async triggerScan(req, ctx) {
      const row = await active(req.agentId);
      return { command: await queue(ctx, row.id, { case: "scanUpdates", value: { $typeName: "redflag.v1.ScanUpdates", subsystems: req.subsystems } }) };
    },

    async setHeartbeat(req, ctx) {
      const row = await active(req.agentId);
      if (!req.enabled) return { command: await queue(ctx, row.id, { case: "disableHeartbeat", value: { $typeName: "redflag.v1.DisableHeartbeat" } }) };
      if (req.intervalSeconds > 60) throw invalid("interval_seconds must be at most 60");
      const duration = req.duration ?? durationFromMs(10 * 60_000);
      if (durationMs(duration) < 10_000 || durationMs(duration) > 86_400_000) throw invalid("duration must be from 10 seconds to 24 hours");
      return {
        command: await queue(ctx, row.id, { case: "enableHeartbeat", value: { $typeName: "redflag.v1.EnableHeartbeat", intervalSeconds: req.intervalSeconds || 5, duration } }),
      };
    },

    async rebootAgent(req, ctx) {
      const row = await active(req.agentId);
      return {
        command: await queue(ctx, row.id, { case: "reboot", value: { $typeName: "redflag.v1.Reboot", delaySeconds: req.delaySeconds, message: req.message, force: req.force, preHook: "", postHook: "", hookTimeoutSeconds: 0 } }),
      };
    },

    async decommissionAgent(req, ctx) {
      const before = await existing(req.agentId);
      const { agent, cancelled } = await decommission(db, deps.agents, before, (tx, cancelledCommands) =>
        audit(tx, ctx, { target: `agent:${before.id}`, before: { decommissioned: false }, after: { decommissioned: true, cancelledCommands } }),
      );
      return { agent: proto(agent), cancelledCommands: cancelled };
    },

    async rebindMachineId(req, ctx) {
      const before = await active(req.agentId);
      if (!isMachineId(req.machineId)) throw invalid("machine_id must be 64 lower-case hex characters (the agent prints it in `redflag-agent status`)");
      const after = await rebindMachineId(db, deps.agents, before, req.machineId, (tx) =>
        audit(tx, ctx, { target: `agent:${before.id}`, before: { machineId: before.machineId }, after: { machineId: req.machineId } }),
      );
      return { agent: proto(after) };
    },

    // One Register of this machine is let through until the deadline: without the agent's key
    // (a reinstalled host), and for a decommissioned agent (letting it back).
    async allowReregistration(req, ctx) {
      const agentId = uuid("agent_id", req.agentId);
      const seconds = req.validFor ? durationMs(req.validFor) / 1000 : 3600;
      if (!(seconds >= 60 && seconds <= 7 * 86_400)) throw invalid("valid_for must be from 1 minute to 7 days");
      const until = new Date(Date.now() + seconds * 1000);
      const after = await allowAgentReregistration(db, agentId, { until, by: callerName(ctx) }, (tx, done) =>
        audit(tx, ctx, {
          target: `agent:${agentId}`,
          before: { reregistrationAllowedUntil: done.before?.toISOString() ?? null },
          after: { reregistrationAllowedUntil: until.toISOString(), decommissioned: done.agent.decommissionedAt !== null },
        }),
      );
      return { agent: proto(after), allowedUntil: timestampFromDate(until) };
    },
  };
}
