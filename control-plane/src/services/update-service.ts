import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
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
import { HOLD_NAME } from "@redflag/common/holds";
import { PACKAGE_NAME } from "@redflag/common/package-name";
import { listPackageGroups, type UpdateFilter } from "../store/package-updates.ts";
import { listHolds, type HoldRow } from "../store/holds.ts";
import type { Prisma } from "../store/types.ts";
import type { EventBus } from "../cluster/events.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import type { AgentConfigs } from "../domain/agent-config.ts";
import { removeHold, setHold } from "../domain/holds.ts";
import { decide, installApproved, updatePage, type Decision } from "../domain/updates.ts";
import { audit, callerName, commandCreator } from "./audit.ts";
import { COMMAND_STATES, commandToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, text, uuid } from "./validate.ts";
import type { Settings } from "../settings.ts";
import { LABEL } from "@redflag/common/labels";

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
      if (!LABEL.test(sel.group)) throw invalid(`selection.group "${sel.group.slice(0, 64)}" is not a group name`);
      f.group = sel.group;
    }
    if (sel.tag) {
      if (!LABEL.test(sel.tag)) throw invalid(`selection.tag "${sel.tag.slice(0, 64)}" is not a tag`);
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

export function createUpdateService(
  db: Prisma,
  wakeups: Wakeups,
  agentConfigs: AgentConfigs,
  events: EventBus,
  settings: Pick<Settings, "minimumAgentVersion">,
): ServiceImpl<typeof UpdateService> {

  // Sets status on the selected updates except held ones; returns what changed.
  const decideOn = (ctx: HandlerContext, sel: UpdateSelection | undefined, status: Decision, from: string[]) =>
    decide(db, selectionFilter(sel, true), { status, from, by: callerName(ctx) }, (tx, chosen) =>
      audit(tx, ctx, {
        target: sel?.agentIds.length === 1 ? `agent:${sel.agentIds[0]}` : "updates",
        after: { status, count: chosen.length, updates: chosen.slice(0, 200).map((r) => `${r.agentId}/${r.source}/${r.name}=${r.availableVersion}`) },
      }),
    );

  return {
    async listUpdates(req) {
      const size = pageSize(req.pageSize);
      const offset = pageOffset(req.pageToken);
      const filter = { ...selectionFilter(req.filter, false), status: statusName(req.status) };
      const { rows: page, more, total, commandStates: commands } = await updatePage(db, filter, { offset, limit: size });
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
          held: r.held,
        }),
      );
      const next = more ? Buffer.from(`o${offset + size}`).toString("base64url") : "";
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
      const { changed, held } = await decideOn(ctx, req.selection, "approved", ["pending", "rejected"]);
      return { approved: changed, held };
    },

    async rejectUpdates(req, ctx) {
      const { changed } = await decideOn(ctx, req.selection, "rejected", ["pending", "approved"]);
      return { rejected: changed };
    },

    async installApprovedUpdates(req, ctx) {
      if (req.approve) await decideOn(ctx, req.selection, "approved", ["pending"]);
      const { commands, packages, skipped } = await installApproved({ db, wakeups, events, settings }, selectionFilter(req.selection, true), commandCreator(ctx), (tx, { command, updates }) =>
        audit(tx, ctx, { target: `agent:${command.agentId}`, after: { commandId: command.id, type: "install_updates", packages: updates.map((u) => `${u.source}/${u.name}=${u.availableVersion}`) } }),
      );
      return { commands: commands.map(commandToProto), packages, skipped };
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
      const row = await setHold(db, agentConfigs, { agentId, source, name: req.name, reason, createdBy: callerName(ctx) }, (tx, row) =>
        audit(tx, ctx, { target: row.agentId ? `agent:${row.agentId}` : "fleet", after: holdJson(row) }),
      );
      return { hold: holdToProto(row) };
    },

    async removeHold(req, ctx) {
      const id = uuid("id", req.id);
      await removeHold(db, agentConfigs, id, (tx, row) => audit(tx, ctx, { target: row.agentId ? `agent:${row.agentId}` : "fleet", before: holdJson(row) }));
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
