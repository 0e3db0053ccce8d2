import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  MaintenanceService,
  type Window,
  WindowKind,
  WindowOccurrenceSchema,
  WindowSchema,
  type WindowSpec,
  WindowSpecSchema,
} from "@redflag/gen/maintenance_service_pb";
import { LABEL, LABEL_RULE, normaliseLabel } from "@redflag/common/labels";
import { compileRecurrence, MAX_PREVIEW } from "../domain/recurrence.ts";
import { addWindow, appliesTo, changeWindow, removeWindow, scheduleOf } from "../domain/windows.ts";
import type { Prisma } from "../store/types.ts";
import { agentLabels, getWindow, listWindows, type WindowInput, type WindowRow } from "../store/windows.ts";
import { audit, callerName } from "./audit.ts";
import { invalid, text, time, uuid } from "./validate.ts";

const MAX_TARGETS = 100;
const KINDS: Record<number, WindowInput["kind"]> = { [WindowKind.MAINTENANCE]: "maintenance", [WindowKind.BLACKOUT]: "blackout" };
const KIND_PROTO = { maintenance: WindowKind.MAINTENANCE, blackout: WindowKind.BLACKOUT } as const;

function seconds(field: string, d: Duration | undefined): number {
  if (!d) throw invalid(`${field} is required (for example 4h)`);
  if (d.nanos !== 0) throw invalid(`${field} must be whole seconds`);
  if (d.seconds < 0n || d.seconds > 10n ** 9n) throw invalid(`${field} must be from 1 minute to 31 days`);
  return Number(d.seconds);
}

function labels(field: string, values: string[]): string[] {
  if (values.length > MAX_TARGETS) throw invalid(`${field} has more than ${MAX_TARGETS} entries`);
  return [
    ...new Set(
      values.map((v, i) => {
        const label = normaliseLabel(v);
        if (!LABEL.test(label)) throw invalid(`${field}[${i}] "${v.slice(0, 64)}" is not a label: ${LABEL_RULE}`);
        return label;
      }),
    ),
  ];
}

// The recurrence fields of a spec (all that a preview needs).
const recurrenceOf = (spec: WindowSpec) => ({
  rrule: spec.rrule,
  dtstart: spec.dtstart,
  durationSeconds: seconds("duration", spec.duration),
  timeZone: spec.timeZone,
});

// A spec checked on the wire; the recurrence itself is checked by the domain.
function windowInput(spec: WindowSpec | undefined): WindowInput {
  if (!spec) throw invalid("window is required");
  const name = text("window.name", spec.name.trim(), { max: 64, required: true });
  const kind = KINDS[spec.kind];
  if (!kind) throw invalid("window.kind must be MAINTENANCE or BLACKOUT");
  const t = spec.targets;
  const groups = labels("window.targets.groups", t?.groups ?? []);
  const tags = labels("window.targets.tags", t?.tags ?? []);
  const agentIds = t?.agentIds ?? [];
  if (agentIds.length > MAX_TARGETS) throw invalid(`window.targets.agent_ids has more than ${MAX_TARGETS} entries`);
  const allAgents = t?.allAgents ?? false;
  if (!allAgents && groups.length + tags.length + agentIds.length === 0) {
    throw invalid("window.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
  }
  return {
    name,
    kind,
    ...recurrenceOf(spec),
    allAgents,
    groups,
    tags,
    agentIds: [...new Set(agentIds.map((id, i) => uuid(`window.targets.agent_ids[${i}]`, id)))],
    enabled: spec.enabled,
  };
}

export function createMaintenanceService(db: Prisma, now: () => Date = () => new Date()): ServiceImpl<typeof MaintenanceService> {
  const toProto = (row: WindowRow, at: Date): Window => {
    const schedule = row.enabled ? scheduleOf(row) : undefined;
    const open = schedule?.openAt(at);
    const next = schedule?.nextStart(at);
    return create(WindowSchema, {
      id: row.id,
      spec: create(WindowSpecSchema, {
        name: row.name,
        kind: KIND_PROTO[row.kind],
        rrule: row.rrule,
        dtstart: row.dtstart,
        duration: { seconds: BigInt(row.durationSeconds), nanos: 0 },
        timeZone: row.timeZone,
        targets: { allAgents: row.allAgents, groups: row.groups, tags: row.tags, agentIds: row.agentIds },
        enabled: row.enabled,
      }),
      createdBy: row.createdBy,
      createTime: timestampFromDate(row.createdAt),
      updateTime: timestampFromDate(row.updatedAt),
      openUntil: open ? timestampFromDate(open.until) : undefined,
      nextStartTime: next ? timestampFromDate(next) : undefined,
    });
  };

  return {
    async listWindows(req) {
      let rows = await listWindows(db);
      if (req.agentId) {
        const [agent] = await agentLabels(db, [uuid("agent_id", req.agentId)]);
        if (!agent) throw new ConnectError(`agent ${req.agentId} does not exist`, Code.NotFound);
        rows = rows.filter((w) => appliesTo(w, agent));
      }
      const at = now();
      return { windows: rows.map((w) => toProto(w, at)) };
    },

    async createWindow(req, ctx) {
      const row = await addWindow(db, windowInput(req.window), callerName(ctx), (tx, row) => audit(tx, ctx, { target: `window:${row.id}`, after: windowJson(row) }));
      return { window: toProto(row, now()) };
    },

    async updateWindow(req, ctx) {
      const id = uuid("id", req.id);
      const row = await changeWindow(db, id, windowInput(req.window), now(), (tx, { before, after }) =>
        audit(tx, ctx, { target: `window:${id}`, before: windowJson(before), after: windowJson(after) }),
      );
      return { window: toProto(row, now()) };
    },

    async deleteWindow(req, ctx) {
      const id = uuid("id", req.id);
      await removeWindow(db, id, (tx, row) => audit(tx, ctx, { target: `window:${id}`, before: windowJson(row) }));
      return {};
    },

    async previewWindow(req) {
      if (req.count > MAX_PREVIEW) throw invalid(`count must be at most ${MAX_PREVIEW}`);
      const count = req.count === 0 ? 10 : req.count;
      const after = req.after ? time("after", req.after) : now();
      let schedule;
      if (req.window.case === "id") {
        const row = await getWindow(db, uuid("id", req.window.value));
        if (!row) throw new ConnectError(`window ${req.window.value} does not exist`, Code.NotFound);
        schedule = scheduleOf(row);
      } else if (req.window.case === "spec") {
        schedule = compileRecurrence(recurrenceOf(req.window.value));
      } else {
        throw invalid("name a saved window (id) or give a definition (spec)");
      }
      const occurrences = schedule.occurrences(after, count).map((o) =>
        create(WindowOccurrenceSchema, { startTime: timestampFromDate(o.start), endTime: timestampFromDate(o.end), localStart: o.localStart, localEnd: o.localEnd }),
      );
      return { occurrences };
    },
  };
}

// A window as its audit entries keep it.
const windowJson = (w: WindowRow) => ({
  id: w.id,
  name: w.name,
  kind: w.kind,
  rrule: w.rrule,
  dtstart: w.dtstart,
  durationSeconds: w.durationSeconds,
  timeZone: w.timeZone,
  allAgents: w.allAgents,
  groups: w.groups,
  tags: w.tags,
  agentIds: w.agentIds,
  enabled: w.enabled,
});
