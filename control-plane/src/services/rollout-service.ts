import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { LABEL, LABEL_RULE, normaliseLabel } from "@redflag/common/labels";
import { PACKAGE_NAME } from "@redflag/common/package-name";
import {
  type Rollout,
  RolloutHostSchema,
  RolloutHostState,
  RolloutRingProgressSchema,
  RolloutRingState,
  RolloutSchema,
  RolloutService,
  type RolloutSpec,
  RolloutSpecSchema,
  RolloutState,
} from "@redflag/gen/rollout_service_pb";
import type { EventBus } from "../cluster/events.ts";
import { healthCutoffs } from "../domain/health.ts";
import { abortRollout, createRollout, pauseRollout, previewRollout, resumeRollout, type RolloutChange } from "../domain/rollouts.ts";
import type { Settings } from "../settings.ts";
import {
  getRollout,
  hostPage,
  listRollouts,
  ringCounts,
  ringCountsOf,
  type HostRow,
  type HostState,
  type RingState,
  type RolloutInput,
  type RolloutKey,
  type RolloutRow,
  type RolloutState as StoredState,
} from "../store/rollouts.ts";
import type { Prisma } from "../store/types.ts";
import { audit, callerName } from "./audit.ts";
import { idPageToken, invalid, nextIdPageToken, nextPageToken, pageToken, text, uuid } from "./validate.ts";

// Bounds of a rollout's definition (see rollout_service.proto).
const MAX_NAME = 64;
const MAX_RINGS = 10;
const MAX_TARGETS = 100;
const MAX_RING_AGENTS = 100;
const MAX_UPDATE_KEYS = 10_000;
const MAX_SOAK_SECONDS = 7 * 86_400;
const MAX_HOST_PAGE = 1000;
const MAX_LIST_PAGE = 200;
const PREVIEW_HOSTS = 1000;
const SOURCE = /^[a-z][a-z0-9_]{0,31}$/;
const ARCHITECTURE = /^[A-Za-z0-9._+-]{0,64}$/;

const STATES: Record<StoredState, RolloutState> = {
  running: RolloutState.RUNNING,
  paused: RolloutState.PAUSED,
  halted: RolloutState.HALTED,
  aborted: RolloutState.ABORTED,
  finished: RolloutState.FINISHED,
};
const RING_STATES: Record<RingState, RolloutRingState> = {
  waiting: RolloutRingState.WAITING,
  installing: RolloutRingState.INSTALLING,
  soaking: RolloutRingState.SOAKING,
  passed: RolloutRingState.PASSED,
  halted: RolloutRingState.HALTED,
  overridden: RolloutRingState.OVERRIDDEN,
};
const HOST_STATES: Record<HostState, RolloutHostState> = {
  waiting: RolloutHostState.WAITING,
  queued: RolloutHostState.QUEUED,
  succeeded: RolloutHostState.SUCCEEDED,
  failed: RolloutHostState.FAILED,
  nothing_to_do: RolloutHostState.NOTHING_TO_DO,
  skipped: RolloutHostState.SKIPPED,
};

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

function agentIds(field: string, values: string[], max: number): string[] {
  if (values.length > max) throw invalid(`${field} has ${values.length} entries; at most ${max} are allowed`);
  const ids = values.map((id, i) => uuid(`${field}[${i}]`, id));
  const twice = ids.find((id, i) => ids.indexOf(id) !== i);
  if (twice) throw invalid(`${field} names agent ${twice} twice`);
  return ids;
}

function soakSeconds(field: string, d: Duration | undefined): number {
  if (!d) return 0;
  if (d.nanos !== 0) throw invalid(`${field} must be whole seconds`);
  if (d.seconds < 0n || d.seconds > BigInt(MAX_SOAK_SECONDS)) throw invalid(`${field} must be from 0 to 7 days`);
  return Number(d.seconds);
}

// A definition checked on the wire: every bound of rollout_service.proto, each refusal naming
// its field. Where the agents go is the domain's (placeAgents).
export function rolloutInput(spec: RolloutSpec | undefined): RolloutInput {
  if (!spec) throw invalid("spec is required");
  const name = text("spec.name", spec.name.trim(), { max: MAX_NAME, required: true });
  const t = spec.targets;
  const targets = {
    allAgents: t?.allAgents ?? false,
    groups: labels("spec.targets.groups", t?.groups ?? []),
    tags: labels("spec.targets.tags", t?.tags ?? []),
    agentIds: agentIds("spec.targets.agent_ids", t?.agentIds ?? [], MAX_TARGETS),
  };
  if (!targets.allAgents && targets.groups.length + targets.tags.length + targets.agentIds.length === 0) {
    throw invalid("spec.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
  }
  let updateKeys: RolloutKey[] = [];
  if (spec.updates.case === "updateKeys") {
    const keys = spec.updates.value.keys;
    if (keys.length === 0) throw invalid("spec.update_keys is empty: name at least one update, or use all_approved");
    if (keys.length > MAX_UPDATE_KEYS) throw invalid(`spec.update_keys has ${keys.length} updates; at most ${MAX_UPDATE_KEYS} are allowed`);
    const seen = new Set<string>();
    updateKeys = keys.map((k, i) => {
      if (!SOURCE.test(k.source) || !PACKAGE_NAME.test(k.name) || !ARCHITECTURE.test(k.architecture)) {
        throw invalid(`spec.update_keys[${i}] does not name an update (agent_id, source, name, architecture)`);
      }
      const key = { agentId: uuid(`spec.update_keys[${i}].agent_id`, k.agentId), source: k.source, name: k.name, architecture: k.architecture };
      const id = `${key.agentId}\u0000${key.source}\u0000${key.name}\u0000${key.architecture}`;
      if (seen.has(id)) throw invalid(`spec.update_keys[${i}] names ${k.name} (${k.source}) of agent ${key.agentId} a second time`);
      seen.add(id);
      return key;
    });
  } else if (!(spec.updates.case === "allApproved" && spec.updates.value)) {
    throw invalid("spec.updates is required: name the updates (update_keys) or set all_approved");
  }
  if (spec.rings.length === 0) throw invalid("spec.rings is empty: give 1 to 10 rings, the last one `rest`");
  if (spec.rings.length > MAX_RINGS) throw invalid(`spec.rings has ${spec.rings.length} rings; at most ${MAX_RINGS} are allowed`);
  const ringNames = new Set<string>();
  const rings = spec.rings.map((r, i) => {
    const field = `spec.rings[${i}]`;
    const ringName = text(`${field}.name`, r.name.trim(), { max: MAX_NAME, required: true });
    if (ringNames.has(ringName)) throw invalid(`${field}.name "${ringName}" is used by an earlier ring; ring names are unique within a rollout`);
    ringNames.add(ringName);
    const threshold = r.successThresholdPercent === 0 ? 100 : r.successThresholdPercent;
    if (threshold > 100) throw invalid(`${field}.success_threshold_percent must be from 1 to 100 (0 means 100)`);
    const common = { name: ringName, thresholdPercent: threshold, soakSeconds: soakSeconds(`${field}.soak`, r.soak), agentIds: [] as string[], percent: 0 };
    switch (r.size.case) {
      case "agents": {
        const ids = agentIds(`${field}.agents.agent_ids`, r.size.value.agentIds, MAX_RING_AGENTS);
        if (ids.length === 0) throw invalid(`${field}.agents names no agent`);
        return { ...common, kind: "agents" as const, agentIds: ids };
      }
      case "percent":
        if (r.size.value < 1 || r.size.value > 100) throw invalid(`${field}.percent must be from 1 to 100`);
        return { ...common, kind: "percent" as const, percent: r.size.value };
      case "rest":
        if (!r.size.value) throw invalid(`${field}.rest must be true when set`);
        if (i !== spec.rings.length - 1) throw invalid(`${field} is "rest" but is not the last ring; only the last ring may take the rest`);
        return { ...common, kind: "rest" as const };
      default:
        throw invalid(`${field} needs a size: agents (named canaries), percent, or rest`);
    }
  });
  return { name, targets, allApproved: spec.updates.case === "allApproved", updateKeys, rings };
}

function specOf(row: RolloutRow): RolloutSpec {
  return create(RolloutSpecSchema, {
    name: row.name,
    targets: { allAgents: row.allAgents, groups: row.groups, tags: row.tags, agentIds: row.agentIds },
    updates: row.allApproved
      ? { case: "allApproved", value: true }
      : { case: "updateKeys", value: { keys: (row.updateKeys as unknown as RolloutKey[]).map((k) => ({ ...k })) } },
    rings: row.rings.map((r) => ({
      name: r.name,
      size:
        r.kind === "agents"
          ? { case: "agents" as const, value: { agentIds: r.agentIds } }
          : r.kind === "percent"
            ? { case: "percent" as const, value: r.percent }
            : { case: "rest" as const, value: true },
      successThresholdPercent: r.thresholdPercent,
      soak: { seconds: BigInt(r.soakSeconds), nanos: 0 },
    })),
  });
}

function hostToProto(h: HostRow) {
  return create(RolloutHostSchema, {
    agentId: h.agentId,
    hostname: h.hostname,
    ring: h.ring,
    state: HOST_STATES[h.state as HostState] ?? RolloutHostState.UNSPECIFIED,
    commandId: h.commandId ?? "",
    message: h.message,
    startTime: h.startedAt ? timestampFromDate(h.startedAt) : undefined,
    finishTime: h.finishedAt ? timestampFromDate(h.finishedAt) : undefined,
    offline: h.offline,
  });
}

// A rollout as its audit entries keep it.
const rolloutJson = (r: RolloutRow) => ({
  id: r.id,
  name: r.name,
  state: r.state,
  currentRing: r.currentRing,
  haltReason: r.haltReason,
  targets: { allAgents: r.allAgents, groups: r.groups, tags: r.tags, agentIds: r.agentIds },
  updates: r.allApproved ? "all approved" : `${(r.updateKeys as unknown[]).length} named`,
  rings: r.rings.map((g) => ({ name: g.name, kind: g.kind, agentIds: g.agentIds, percent: g.percent, thresholdPercent: g.thresholdPercent, soakSeconds: g.soakSeconds, state: g.state })),
});

export interface RolloutServiceDeps {
  db: Prisma;
  events: EventBus;
  settings: Pick<Settings, "pollIntervalSeconds">;
  now?: () => Date;
}

export function createRolloutService(deps: RolloutServiceDeps): ServiceImpl<typeof RolloutService> {
  const { db } = deps;
  const now = deps.now ?? (() => new Date());
  const onlineAfter = (at: Date) => healthCutoffs(at, deps.settings.pollIntervalSeconds).online;

  const toProto = async (rows: RolloutRow[]): Promise<Rollout[]> => {
    const counts = await ringCounts(db, rows.map((r) => r.id), onlineAfter(now()));
    return rows.map((row) => {
      const rings = row.rings.map((g) => {
        const c = ringCountsOf(counts, row.id, g.index);
        return create(RolloutRingProgressSchema, {
          index: g.index,
          name: g.name,
          state: RING_STATES[g.state as RingState] ?? RolloutRingState.UNSPECIFIED,
          hosts: c.hosts,
          waiting: c.waiting,
          installing: c.queued,
          succeeded: c.succeeded + c.nothingToDo,
          failed: c.failed,
          skipped: c.skipped,
          offline: c.offline,
          successThresholdPercent: g.thresholdPercent,
          startTime: g.startedAt ? timestampFromDate(g.startedAt) : undefined,
          soakUntil: g.soakUntil ? timestampFromDate(g.soakUntil) : undefined,
        });
      });
      return create(RolloutSchema, {
        id: row.id,
        spec: specOf(row),
        state: STATES[row.state as StoredState] ?? RolloutState.UNSPECIFIED,
        currentRing: row.currentRing,
        haltReason: row.haltReason,
        createdBy: row.createdBy,
        createTime: timestampFromDate(row.createdAt),
        updateTime: timestampFromDate(row.updatedAt),
        endTime: row.endedAt ? timestampFromDate(row.endedAt) : undefined,
        rings,
        hostCount: rings.reduce((n, r) => n + r.hosts, 0),
      });
    });
  };
  const one = async (row: RolloutRow) => (await toProto([row]))[0]!;
  const changeAudit = (ctx: Parameters<typeof audit>[1]) => (tx: Parameters<typeof audit>[0], { before, after }: RolloutChange) =>
    audit(tx, ctx, { target: `rollout:${after.id}`, before: rolloutJson(before), after: rolloutJson(after) });

  return {
    async listRollouts(req) {
      if (req.pageSize < 0 || req.pageSize > MAX_LIST_PAGE) throw invalid(`page_size must be from 0 to ${MAX_LIST_PAGE}`);
      const state = req.state === RolloutState.UNSPECIFIED ? undefined : (Object.entries(STATES).find(([, v]) => v === req.state)?.[0] as StoredState | undefined);
      if (req.state !== RolloutState.UNSPECIFIED && !state) throw invalid(`state ${req.state} is not a rollout state`);
      const { rows, next } = await listRollouts(db, state, req.pageSize === 0 ? 50 : req.pageSize, pageToken(req.pageToken));
      return { rollouts: await toProto(rows), nextPageToken: nextPageToken(next) };
    },

    async getRollout(req) {
      const id = uuid("id", req.id);
      if (req.hostPageSize < 0 || req.hostPageSize > MAX_HOST_PAGE) throw invalid(`host_page_size must be from 0 to ${MAX_HOST_PAGE}`);
      const row = await getRollout(db, id);
      if (!row) throw new ConnectError(`rollout ${id} does not exist`, Code.NotFound);
      if (req.ring !== undefined && req.ring >= row.rings.length) throw invalid(`ring ${req.ring} does not exist; the rollout has rings 0 to ${row.rings.length - 1}`);
      const offset = Number(idPageToken(req.hostPageToken) ?? 0n);
      if (offset > 10 * MAX_HOST_PAGE * MAX_HOST_PAGE) throw invalid("host_page_token is not valid; pass the next_host_page_token of a previous page");
      const limit = req.hostPageSize === 0 ? MAX_HOST_PAGE : req.hostPageSize;
      const page = await hostPage(db, id, req.ring, { offset, limit }, onlineAfter(now()));
      return {
        rollout: await one(row),
        hosts: page.rows.map(hostToProto),
        nextHostPageToken: page.more ? nextIdPageToken(BigInt(offset + limit)) : "",
      };
    },

    async previewRollout(req) {
      const preview = await previewRollout(db, rolloutInput(req.spec));
      return {
        rings: preview.rings,
        hosts: preview.hosts.slice(0, PREVIEW_HOSTS).map((h) => ({ agentId: h.agentId, hostname: h.hostname, ring: h.ring, updates: h.updates })),
        hostCount: preview.hosts.length,
      };
    },

    async createRollout(req, ctx) {
      const row = await createRollout(db, rolloutInput(req.spec), callerName(ctx), now(), (tx, row) => audit(tx, ctx, { target: `rollout:${row.id}`, after: rolloutJson(row) }));
      return { rollout: await one(row) };
    },

    async pauseRollout(req, ctx) {
      return { rollout: await one(await pauseRollout(db, uuid("id", req.id), now(), changeAudit(ctx))) };
    },

    async resumeRollout(req, ctx) {
      return { rollout: await one(await resumeRollout(db, uuid("id", req.id), callerName(ctx), now(), changeAudit(ctx))) };
    },

    async abortRollout(req, ctx) {
      return { rollout: await one(await abortRollout({ db, events: deps.events }, uuid("id", req.id), callerName(ctx), now(), changeAudit(ctx))) };
    },
  };
}
