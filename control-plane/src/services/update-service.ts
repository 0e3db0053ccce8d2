import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { CommandSchema, PackageRefSchema, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import {
  type FleetUpdate,
  FleetUpdateSchema,
  type Hold,
  HoldSchema,
  PackageUpdateGroupSchema,
  type UpdateSelection,
  UpdateService,
  UpdateStatus,
} from "@redflag/gen/update_service_pb";
import { compileHolds, HOLD_NAME } from "@redflag/common/holds";
import { PACKAGE_NAME } from "@redflag/common/package-name";
import type { Prisma as PrismaNs } from "../generated/prisma/client.ts";
import { createCommand } from "../store/commands.ts";
import { listPackageGroups, type UpdateFilter } from "../store/package-updates.ts";
import { createHold, deleteHold, getHold, holdsFor, listHolds, type HoldRow } from "../store/holds.ts";
import type { Prisma } from "../store/types.ts";
import type { EventBus } from "../events.ts";
import type { Wakeups } from "../wakeups.ts";
import type { AgentConfigs } from "./agent-config.ts";
import { audit, callerName, commandCreator } from "./audit.ts";
import { COMMAND_STATES, commandToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, text, uuid } from "./validate.ts";
import { requireSupportedVersion } from "../domain/upgrades.ts";
import type { Settings } from "../settings.ts";

type Where = PrismaNs.PackageUpdateWhereInput;

const SOURCE = /^[a-z][a-z0-9_]{0,31}$/;
const STATUS_NAMES: Record<number, string> = { [UpdateStatus.PENDING]: "pending", [UpdateStatus.APPROVED]: "approved", [UpdateStatus.REJECTED]: "rejected" };
const STATUS_PROTO = Object.fromEntries(Object.entries(STATUS_NAMES).map(([k, v]) => [v, Number(k) as UpdateStatus]));
const SEVERITY_NAME = (s: UpdateSeverity) => {
  const name = UpdateSeverity[s];
  if (!name || s === UpdateSeverity.UNSPECIFIED) throw invalid(`severity ${s} is not a severity`);
  return name.toLowerCase();
};
const SEVERITY_PROTO = (name: string) => (UpdateSeverity as unknown as Record<string, UpdateSeverity>)[name.toUpperCase()] ?? UpdateSeverity.UNKNOWN;

// A selection checked and read into a filter. `require` refuses an empty one: bulk actions
// never hit the whole fleet by accident (set `all` to mean it).
export function selectionFilter(sel: UpdateSelection | undefined, require: boolean): UpdateFilter {
  const f: UpdateFilter = { keys: [], agentIds: [], severities: [], securityOnly: false, packageName: "", source: "", group: "", tag: "", status: "" };
  if (sel) {
    if (sel.keys.length > 1000) throw invalid("selection.keys has more than 1000 entries");
    f.keys = sel.keys.map((k, i) => {
      if (!SOURCE.test(k.source) || !PACKAGE_NAME.test(k.name)) throw invalid(`selection.keys[${i}] does not name an update (agent_id, source, name, architecture)`);
      return { agentId: uuid(`selection.keys[${i}].agent_id`, k.agentId), source: k.source, name: k.name, architecture: k.architecture };
    });
    f.agentIds = sel.agentIds.map((id, i) => uuid(`selection.agent_ids[${i}]`, id));
    f.severities = sel.severities.map(SEVERITY_NAME);
    f.securityOnly = sel.securityOnly;
    if (sel.packageName) {
      if (!PACKAGE_NAME.test(sel.packageName)) throw invalid(`selection.package_name "${sel.packageName.slice(0, 64)}" is not a package name`);
      f.packageName = sel.packageName;
    }
    if (sel.group) {
      if (!/^[a-z0-9][a-z0-9._:-]{0,62}$/.test(sel.group)) throw invalid(`selection.group "${sel.group.slice(0, 64)}" is not a group name`);
      f.group = sel.group;
    }
    if (sel.tag) {
      if (!/^[a-z0-9][a-z0-9._:-]{0,62}$/.test(sel.tag)) throw invalid(`selection.tag "${sel.tag.slice(0, 64)}" is not a tag`);
      f.tag = sel.tag;
    }
    if (sel.source) {
      if (!SOURCE.test(sel.source)) throw invalid(`selection.source "${sel.source.slice(0, 64)}" is not a source name`);
      f.source = sel.source;
    }
  }
  const empty = !f.keys.length && !f.agentIds.length && !f.severities.length && !f.securityOnly && !f.packageName && !f.group && !f.tag && !f.source;
  if (require && empty && !sel?.all) {
    throw invalid("the selection is empty: name keys, agents, severities, a package or a source (or set all to mean every update)");
  }
  return f;
}

// A selection as a query (see selectionFilter).
export function selectionWhere(sel: UpdateSelection | undefined, require: boolean): Where {
  const f = selectionFilter(sel, require);
  const and: Where[] = [];
  if (f.keys.length > 0) and.push({ OR: f.keys });
  if (f.agentIds.length > 0) and.push({ agentId: { in: f.agentIds } });
  if (f.severities.length > 0) and.push({ severity: { in: f.severities } });
  if (f.securityOnly) and.push({ security: true });
  if (f.packageName) and.push({ name: f.packageName });
  if (f.group) and.push({ agent: { group: f.group } });
  if (f.tag) and.push({ agent: { tags: { has: f.tag } } });
  if (f.source) and.push({ source: f.source });
  return { AND: and, agent: { decommissionedAt: null } };
}

// The offset a page token of a list carries.
function pageOffset(token: string): number {
  if (!token) return 0;
  const decoded = Buffer.from(token, "base64url").toString("utf8");
  if (!/^o\d{1,9}$/.test(decoded)) throw invalid("page_token is not valid; pass the next_page_token of a previous page");
  return Number(decoded.slice(1));
}

function statusName(status: UpdateStatus): string {
  if (status === UpdateStatus.UNSPECIFIED) return "";
  const name = STATUS_NAMES[status];
  if (!name) throw invalid(`status ${status} is not an update status`);
  return name;
}

// Which of these agents' updates a hold keeps: the fleet-wide holds and each agent's own, every
// pattern compiled once (common/holds matches without backtracking).
function heldBy(holds: HoldRow[]) {
  const fleet = compileHolds(holds.filter((h) => h.agentId === null));
  const own = new Map<string, HoldRow[]>();
  for (const h of holds) if (h.agentId) own.set(h.agentId, [...(own.get(h.agentId) ?? []), h]);
  const perAgent = new Map([...own].map(([id, list]) => [id, compileHolds(list)]));
  return (u: { agentId: string; source: string; name: string }) =>
    fleet.find(u.source, u.name) !== undefined || perAgent.get(u.agentId)?.find(u.source, u.name) !== undefined;
}

export function createUpdateService(
  db: Prisma,
  wakeups: Wakeups,
  agentConfigs: AgentConfigs,
  events: EventBus,
  settings: Pick<Settings, "minimumAgentVersion">,
): ServiceImpl<typeof UpdateService> {

  // Sets status on the selected updates except held ones; returns what changed.
  const decide = async (ctx: HandlerContext, sel: UpdateSelection | undefined, status: "approved" | "rejected", from: string[]) => {
    const where = selectionWhere(sel, true);
    const rows = await db.packageUpdate.findMany({ where: { ...where, status: { in: from } }, select: { agentId: true, source: true, name: true, architecture: true, availableVersion: true } });
    const isHeld = heldBy(await holdsFor(db, [...new Set(rows.map((r) => r.agentId))]));
    const chosen = status === "approved" ? rows.filter((r) => !isHeld(r)) : rows;
    const now = new Date();
    for (let i = 0; i < chosen.length; i += 500) {
      await db.packageUpdate.updateMany({
        where: { OR: chosen.slice(i, i + 500).map((r) => ({ agentId: r.agentId, source: r.source, name: r.name, architecture: r.architecture })) },
        data: { status, decidedBy: callerName(ctx), decidedAt: now },
      });
    }
    await audit(db, ctx, {
      target: sel?.agentIds.length === 1 ? `agent:${sel.agentIds[0]}` : "updates",
      after: { status, count: chosen.length, updates: chosen.slice(0, 200).map((r) => `${r.agentId}/${r.source}/${r.name}=${r.availableVersion}`) },
    });
    return { changed: chosen.length, held: rows.length - chosen.length };
  };

  return {
    async listUpdates(req) {
      const size = pageSize(req.pageSize);
      const offset = pageOffset(req.pageToken);
      const where: Where = { ...selectionWhere(req.filter, false) };
      const status = statusName(req.status);
      if (status) where.status = status;
      const [rows, total] = await Promise.all([
        db.packageUpdate.findMany({
          where,
          include: { agent: { select: { hostname: true } } },
          orderBy: [{ agent: { hostname: "asc" } }, { agentId: "asc" }, { source: "asc" }, { name: "asc" }, { architecture: "asc" }],
          skip: offset,
          take: size + 1,
        }),
        db.packageUpdate.count({ where }),
      ]);
      const page = rows.slice(0, size);
      const commandIds = [...new Set(page.map((r) => r.commandId).filter((id): id is string => id !== null))];
      const commands = new Map(
        (await db.command.findMany({ where: { id: { in: commandIds } }, select: { id: true, state: true } })).map((c) => [c.id, c.state]),
      );
      const isHeld = heldBy(await holdsFor(db, [...new Set(page.map((r) => r.agentId))]));
      const updates: FleetUpdate[] = page.map((r) =>
        create(FleetUpdateSchema, {
          agentId: r.agentId,
          hostname: r.agent.hostname,
          update: create(PackageUpdateSchema, {
            source: r.source,
            name: r.name,
            architecture: r.architecture,
            currentVersion: r.currentVersion,
            availableVersion: r.availableVersion,
            repository: r.repository,
            severity: SEVERITY_PROTO(r.severity),
            security: r.security,
            sizeBytes: r.sizeBytes,
            rebootRequired: r.rebootRequired,
          }),
          status: STATUS_PROTO[r.status] ?? UpdateStatus.PENDING,
          decidedBy: r.decidedBy ?? "",
          decideTime: r.decidedAt ? timestampFromDate(r.decidedAt) : undefined,
          firstSeenTime: timestampFromDate(r.firstSeenAt),
          installCommandId: r.commandId ?? "",
          installCommandState: r.commandId && commands.has(r.commandId) ? COMMAND_STATES[commands.get(r.commandId)!] : undefined,
          held: isHeld(r),
        }),
      );
      const next = rows.length > size ? Buffer.from(`o${offset + size}`).toString("base64url") : "";
      return { updates, nextPageToken: next || nextPageToken(undefined), total };
    },

    async listPackageUpdates(req) {
      const size = pageSize(req.pageSize);
      const offset = pageOffset(req.pageToken);
      const filter = { ...selectionFilter(req.filter, false), status: statusName(req.status) };
      const { rows, total } = await listPackageGroups(db, filter, { offset, limit: size });
      const packages = rows.map((r) =>
        create(PackageUpdateGroupSchema, {
          source: r.source,
          name: r.name,
          availableVersion: r.availableVersion,
          architectures: r.architectures,
          severity: SEVERITY_PROTO(r.severity),
          security: r.security,
          rebootRequired: r.rebootRequired,
          agentCount: r.agents,
          pendingCount: r.pending,
          approvedCount: r.approved,
          rejectedCount: r.rejected,
          firstSeenTime: timestampFromDate(r.firstSeenAt),
        }),
      );
      const next = offset + rows.length < total ? Buffer.from(`o${offset + size}`).toString("base64url") : "";
      return { packages, nextPageToken: next, total };
    },

    async approveUpdates(req, ctx) {
      const { changed, held } = await decide(ctx, req.selection, "approved", ["pending", "rejected"]);
      return { approved: changed, held };
    },

    async rejectUpdates(req, ctx) {
      const { changed } = await decide(ctx, req.selection, "rejected", ["pending", "approved"]);
      return { rejected: changed };
    },

    async installApprovedUpdates(req, ctx) {
      if (req.approve) await decide(ctx, req.selection, "approved", ["pending"]);
      const where = selectionWhere(req.selection, true);
      const rows = await db.packageUpdate.findMany({ where: { ...where, status: "approved" }, orderBy: [{ agentId: "asc" }, { source: "asc" }, { name: "asc" }] });
      const isHeld = heldBy(await holdsFor(db, [...new Set(rows.map((r) => r.agentId))]));
      const byAgent = new Map<string, typeof rows>();
      for (const r of rows) if (!isHeld(r)) byAgent.set(r.agentId, [...(byAgent.get(r.agentId) ?? []), r]);
      // Refused for all when one of them runs below the minimum supported version: it may only be upgraded.
      await requireSupportedVersion(db, settings.minimumAgentVersion, [...byAgent.keys()], "installUpdates");
      const commands = [];
      for (const [agentId, updates] of byAgent) {
        // Pinned to the approved versions: the agent installs exactly what was approved.
        const action = {
          case: "installUpdates" as const,
          value: {
            $typeName: "redflag.v1.InstallUpdates" as const,
            packages: updates.map((u) => create(PackageRefSchema, { source: u.source, name: u.name, version: u.availableVersion, architecture: u.architecture })),
            sources: [],
          },
        };
        const row = await createCommand(db, {
          agentId,
          type: "install_updates",
          action: toBinary(CommandSchema, create(CommandSchema, { action })),
          timeoutSeconds: 0,
          ...commandCreator(ctx),
        });
        await db.packageUpdate.updateMany({
          where: { OR: updates.map((u) => ({ agentId: u.agentId, source: u.source, name: u.name, architecture: u.architecture })) },
          data: { commandId: row.id },
        });
        wakeups.notify(agentId);
        events.publish([{ commandId: row.id, agentId }]);
        commands.push(commandToProto(row));
        await audit(db, ctx, { target: `agent:${agentId}`, after: { commandId: row.id, type: "install_updates", packages: updates.map((u) => `${u.source}/${u.name}=${u.availableVersion}`) } });
      }
      return { commands, packages: [...byAgent.values()].reduce((n, u) => n + u.length, 0) };
    },

    async listHolds(req) {
      const agentId = req.agentId ? uuid("agent_id", req.agentId) : undefined;
      return { holds: (await listHolds(db, agentId)).map(holdToProto) };
    },

    async setHold(req, ctx) {
      const agentId = req.agentId ? uuid("agent_id", req.agentId) : null;
      const source = req.source || "*";
      if (source !== "*" && !SOURCE.test(source)) throw invalid(`source "${source.slice(0, 64)}" is not a source name (or "*")`);
      if (!HOLD_NAME.test(req.name)) {
        throw invalid(`name "${req.name.slice(0, 64)}" is not a package name or pattern ("linux-image-*") of at most 255 characters`);
      }
      if (req.name.replace(/\*/g, "") === "") throw invalid('a hold on "*" alone would hold every package; name the packages');
      const reason = text("reason", req.reason, { max: 200 });
      const row = await createHold(db, { agentId, source, name: req.name, reason, createdBy: callerName(ctx) });
      agentConfigs.invalidate();
      await audit(db, ctx, { target: agentId ? `agent:${agentId}` : "fleet", after: holdJson(row) });
      return { hold: holdToProto(row) };
    },

    async removeHold(req, ctx) {
      const id = uuid("id", req.id);
      const row = await getHold(db, id);
      if (!row) throw new ConnectError(`hold ${id} does not exist`, Code.NotFound);
      await deleteHold(db, id);
      agentConfigs.invalidate();
      await audit(db, ctx, { target: row.agentId ? `agent:${row.agentId}` : "fleet", before: holdJson(row) });
      return {};
    },
  };
}

function holdToProto(row: HoldRow): Hold {
  return create(HoldSchema, {
    id: row.id,
    agentId: row.agentId ?? "",
    source: row.source,
    name: row.name,
    reason: row.reason,
    createdBy: row.createdBy,
    createTime: timestampFromDate(row.createdAt),
  });
}

const holdJson = (row: HoldRow) => ({ id: row.id, agentId: row.agentId, source: row.source, name: row.name, reason: row.reason });
