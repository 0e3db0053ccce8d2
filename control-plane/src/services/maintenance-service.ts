import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  MaintenanceService,
  type RebootPolicy,
  RebootMode,
  RebootPolicySchema,
  type RebootPolicySpec,
  RebootPolicySpecSchema,
  type Window,
  WindowKind,
  WindowOccurrenceSchema,
  WindowSchema,
  type WindowSpec,
  WindowSpecSchema,
} from "@redflag/gen/maintenance_service_pb";
import { LABEL, LABEL_RULE, normaliseLabel } from "@redflag/common/labels";
import { HOOK_NAME, HOOK_NAME_RULE, DEFAULT_HOOK_TIMEOUT_SECONDS, MAX_HOOK_TIMEOUT_SECONDS } from "@redflag/common/reboot-hooks";
import { compileRecurrence, MAX_PREVIEW } from "../domain/recurrence.ts";
import { addRebootPolicy, changeRebootPolicy, DEFAULT_RETURN_TIMEOUT_SECONDS, removeRebootPolicy } from "../domain/reboot-policies.ts";
import { listRebootPolicies, type RebootPolicyInput, type RebootPolicyRow } from "../store/reboot-policies.ts";
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

// A bounded duration in whole seconds; `fallback` when unset.
function boundedSeconds(field: string, d: Duration | undefined, min: number, max: number, words: string, fallback: number): number {
  if (!d) return fallback;
  if (d.nanos !== 0) throw invalid(`${field} must be whole seconds`);
  if (d.seconds < BigInt(min) || d.seconds > BigInt(max)) throw invalid(`${field} must be from ${words}`);
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

// The agents a window or a reboot policy names (`field`: "window" or "policy").
function targetsOf(field: string, t: WindowSpec["targets"]) {
  const groups = labels(`${field}.targets.groups`, t?.groups ?? []);
  const tags = labels(`${field}.targets.tags`, t?.tags ?? []);
  const agentIds = t?.agentIds ?? [];
  if (agentIds.length > MAX_TARGETS) throw invalid(`${field}.targets.agent_ids has more than ${MAX_TARGETS} entries`);
  const allAgents = t?.allAgents ?? false;
  if (!allAgents && groups.length + tags.length + agentIds.length === 0) {
    throw invalid(`${field}.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet`);
  }
  return { allAgents, groups, tags, agentIds: [...new Set(agentIds.map((id, i) => uuid(`${field}.targets.agent_ids[${i}]`, id)))] };
}

// A spec checked on the wire; the recurrence itself is checked by the domain.
function windowInput(spec: WindowSpec | undefined): WindowInput {
  if (!spec) throw invalid("window is required");
  const name = text("window.name", spec.name.trim(), { max: 64, required: true });
  const kind = KINDS[spec.kind];
  if (!kind) throw invalid("window.kind must be MAINTENANCE or BLACKOUT");
  return {
    name,
    kind,
    ...recurrenceOf(spec),
    ...targetsOf("window", spec.targets),
    enabled: spec.enabled,
    autoInstall: autoInstallOf(kind, spec.autoInstall),
  };
}

function autoInstallOf(kind: WindowInput["kind"], autoInstall: boolean): boolean {
  if (autoInstall && kind === "blackout") throw invalid("window.auto_install is for maintenance windows: a blackout window installs nothing");
  return autoInstall;
}

const MODES: Record<number, RebootPolicyInput["mode"]> = { [RebootMode.NEVER]: "never", [RebootMode.WHEN_REQUIRED]: "when_required", [RebootMode.ALWAYS]: "always" };
const MODE_PROTO = { never: RebootMode.NEVER, when_required: RebootMode.WHEN_REQUIRED, always: RebootMode.ALWAYS } as const;

function hook(field: string, name: string): string {
  if (name !== "" && !HOOK_NAME.test(name)) throw invalid(`${field} "${name.slice(0, 64)}" is not a hook name (the name of an executable in the agent's hooks directory): ${HOOK_NAME_RULE}`);
  return name;
}

function rebootPolicyInput(spec: RebootPolicySpec | undefined): RebootPolicyInput {
  if (!spec) throw invalid("policy is required");
  const mode = MODES[spec.mode];
  if (!mode) throw invalid("policy.mode must be NEVER, WHEN_REQUIRED or ALWAYS");
  return {
    name: text("policy.name", spec.name.trim(), { max: 64, required: true }),
    ...targetsOf("policy", spec.targets),
    mode,
    windowOnly: spec.windowOnly,
    preHook: hook("policy.pre_hook", spec.preHook),
    postHook: hook("policy.post_hook", spec.postHook),
    hookTimeoutSeconds: boundedSeconds("policy.hook_timeout", spec.hookTimeout, 1, MAX_HOOK_TIMEOUT_SECONDS, "1 second to 30 minutes", DEFAULT_HOOK_TIMEOUT_SECONDS),
    returnTimeoutSeconds: boundedSeconds("policy.return_timeout", spec.returnTimeout, 60, 86_400, "1 minute to 24 hours", DEFAULT_RETURN_TIMEOUT_SECONDS),
    enabled: spec.enabled,
  };
}

const rebootPolicyToProto = (row: RebootPolicyRow): RebootPolicy =>
  create(RebootPolicySchema, {
    id: row.id,
    spec: create(RebootPolicySpecSchema, {
      name: row.name,
      targets: { allAgents: row.allAgents, groups: row.groups, tags: row.tags, agentIds: row.agentIds },
      mode: MODE_PROTO[row.mode],
      windowOnly: row.windowOnly,
      preHook: row.preHook,
      postHook: row.postHook,
      hookTimeout: { seconds: BigInt(row.hookTimeoutSeconds), nanos: 0 },
      returnTimeout: { seconds: BigInt(row.returnTimeoutSeconds), nanos: 0 },
      enabled: row.enabled,
    }),
    createdBy: row.createdBy,
    createTime: timestampFromDate(row.createdAt),
    updateTime: timestampFromDate(row.updatedAt),
  });

// A reboot policy as its audit entries keep it.
const rebootPolicyJson = ({ createdAt: _c, updatedAt: _u, createdBy: _b, ...rest }: RebootPolicyRow) => rest;

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
        autoInstall: row.autoInstall ?? false,
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

    async listRebootPolicies() {
      return { policies: (await listRebootPolicies(db)).map(rebootPolicyToProto) };
    },

    async createRebootPolicy(req, ctx) {
      const row = await addRebootPolicy(db, rebootPolicyInput(req.policy), callerName(ctx), (tx, row) => audit(tx, ctx, { target: `reboot_policy:${row.id}`, after: rebootPolicyJson(row) }));
      return { policy: rebootPolicyToProto(row) };
    },

    async updateRebootPolicy(req, ctx) {
      const id = uuid("id", req.id);
      const row = await changeRebootPolicy(db, id, rebootPolicyInput(req.policy), now(), (tx, { before, after }) =>
        audit(tx, ctx, { target: `reboot_policy:${id}`, before: rebootPolicyJson(before), after: rebootPolicyJson(after) }),
      );
      return { policy: rebootPolicyToProto(row) };
    },

    async deleteRebootPolicy(req, ctx) {
      const id = uuid("id", req.id);
      await removeRebootPolicy(db, id, (tx, row) => audit(tx, ctx, { target: `reboot_policy:${id}`, before: rebootPolicyJson(row) }));
      return {};
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
  autoInstall: w.autoInstall ?? false,
});
