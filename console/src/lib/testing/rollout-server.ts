import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { type ConnectRouter } from "@connectrpc/connect";
import { AgentHealth, AgentSchema, FleetService } from "@redflag/gen/fleet_service_pb";
import {
  type CreateRolloutRequest,
  type PreviewRolloutRequest,
  type Rollout,
  type RolloutHost,
  RolloutHostSchema,
  RolloutHostState,
  RolloutRingProgressSchema,
  RolloutRingState,
  RolloutSchema,
  RolloutService,
  type RolloutSpec,
  RolloutState,
} from "@redflag/gen/rollout_service_pb";
import { agentsLeftOut, checkRolloutSpec, emptyRing, notFound, ringNamesStranger, rolloutNameTaken, rolloutStateRefused } from "./server-rules.ts";

// An in-memory RolloutService that behaves like the control plane's for what the console
// uses: it places agents in rings as documented (named agents, then percentages of those left,
// rounded up, then the rest; in the order the test lists them, where the control plane orders
// them by a hash), keeps rollouts with their hosts, moves states on Pause, Resume
// (past a halt: the ring is overridden and its waiting hosts skipped) and Abort, and refuses
// with the control plane's codes and messages (server-rules.ts). Tests move hosts on with
// `setHost`, `halt` and `soak`, as the scheduler and the agents would.

export interface FakeAgent {
  id: string;
  hostname: string;
  group?: string;
  tags?: string[];
  // Approved updates it would install now.
  updates: number;
  // Decommissioned: listed by hostname, never a target.
  decommissioned?: boolean;
}

const STATE_WORDS: Record<number, string> = {
  [RolloutState.RUNNING]: "running",
  [RolloutState.PAUSED]: "paused",
  [RolloutState.HALTED]: "halted",
  [RolloutState.ABORTED]: "aborted",
  [RolloutState.FINISHED]: "finished",
};

export function rolloutServer(agents: FakeAgent[], initial: { rollout: Rollout; hosts: RolloutHost[] }[] = []) {
  const rollouts: Rollout[] = initial.map((i) => i.rollout);
  const hostsOf = new Map<string, RolloutHost[]>(initial.map((i) => [i.rollout.id, i.hosts]));
  const created: CreateRolloutRequest[] = [];
  const previews: PreviewRolloutRequest[] = [];
  const actions: string[] = [];
  let n = 0;

  const targetsOf = (spec: RolloutSpec) => {
    const t = spec.targets!;
    return agents.filter((a) => !a.decommissioned).filter((a) => t.allAgents || (a.group && t.groups.includes(a.group)) || (a.tags ?? []).some((g) => t.tags.includes(g)) || t.agentIds.includes(a.id));
  };

  // Agent index by ring, as the control plane places them; throws its refusals.
  function place(spec: RolloutSpec): FakeAgent[][] {
    checkRolloutSpec(spec);
    const targets = targetsOf(spec);
    const left = new Set(targets);
    const rings: FakeAgent[][] = spec.rings.map(() => []);
    spec.rings.forEach((r, i) => {
      if (r.size.case !== "agents") return;
      for (const id of r.size.value.agentIds) {
        const a = targets.find((t) => t.id === id);
        if (!a) throw ringNamesStranger(r.name, id);
        left.delete(a);
        rings[i]!.push(a);
      }
    });
    spec.rings.forEach((r, i) => {
      if (r.size.case === "percent") {
        const take = [...left].slice(0, Math.ceil((left.size * r.size.value) / 100));
        for (const a of take) left.delete(a);
        rings[i]!.push(...take);
      } else if (r.size.case === "rest") {
        rings[i]!.push(...left);
        left.clear();
      }
    });
    if (left.size > 0) throw agentsLeftOut([...left].map((a) => a.hostname).sort(), spec.rings.at(-1)!.name);
    rings.forEach((g, i) => {
      if (g.length === 0) throw emptyRing(spec.rings[i]!.name, spec.rings[i]!.size.case === "rest");
    });
    return rings;
  }

  const updatesFor = (spec: RolloutSpec, a: FakeAgent) =>
    spec.updates.case === "updateKeys" ? spec.updates.value.keys.filter((k) => k.agentId === a.id).length : a.updates;

  // Ring figures from the hosts, as GetRollout reports them.
  function refresh(r: Rollout) {
    const hosts = hostsOf.get(r.id) ?? [];
    r.rings.forEach((g, i) => {
      const mine = hosts.filter((h) => h.ring === i);
      const count = (...s: RolloutHostState[]) => mine.filter((h) => s.includes(h.state)).length;
      g.hosts = mine.length;
      g.waiting = count(RolloutHostState.WAITING);
      g.installing = count(RolloutHostState.QUEUED);
      g.succeeded = count(RolloutHostState.SUCCEEDED, RolloutHostState.NOTHING_TO_DO);
      g.failed = count(RolloutHostState.FAILED);
      g.skipped = count(RolloutHostState.SKIPPED);
      g.offline = mine.filter((h) => h.offline && (h.state === RolloutHostState.SUCCEEDED || h.state === RolloutHostState.FAILED)).length;
    });
    r.hostCount = hosts.length;
    r.updateTime = timestampNow();
    return r;
  }

  const refused = (r: Rollout, what: "pause" | "resume" | "abort") =>
    rolloutStateRefused({ name: r.spec!.name, state: STATE_WORDS[r.state]!, haltedRing: r.rings[r.currentRing]?.name }, what);

  const find = (id: string) => {
    const r = rollouts.find((x) => x.id === id);
    if (!r) throw notFound("rollout", id);
    return r;
  };

  // Starts ring i (queues its hosts), or finishes the rollout after the last.
  function startRing(r: Rollout, i: number) {
    r.currentRing = i;
    if (i >= r.rings.length) {
      r.state = RolloutState.FINISHED;
      r.endTime = timestampNow();
      return;
    }
    r.rings[i]!.state = RolloutRingState.INSTALLING;
    r.rings[i]!.startTime = timestampNow();
    for (const h of hostsOf.get(r.id) ?? []) if (h.ring === i && h.state === RolloutHostState.WAITING) h.state = RolloutHostState.QUEUED;
  }

  const routes = (router: ConnectRouter) => {
    // The form finds agents by hostname, as the console does everywhere.
    router.service(FleetService, {
      listAgents: (req) => ({
        agents: agents
          .filter((a) => (!req.hostname || a.hostname.toLowerCase() === req.hostname.toLowerCase()) && (!req.group || a.group === req.group))
          .slice(0, req.pageSize || 50)
          .map((a) => create(AgentSchema, { id: a.id, hostname: a.hostname, group: a.group ?? "", tags: a.tags ?? [], health: a.decommissioned ? AgentHealth.DECOMMISSIONED : AgentHealth.ONLINE })),
      }),
    });
    router.service(RolloutService, {
      listRollouts: () => ({ rollouts: [...rollouts].reverse().map(refresh) }),
      getRollout(req) {
        const r = refresh(find(req.id));
        const hosts = (hostsOf.get(r.id) ?? []).filter((h) => req.ring === undefined || h.ring === req.ring);
        return { rollout: r, hosts };
      },
      previewRollout(req) {
        previews.push(req);
        const rings = place(req.spec!);
        return {
          rings: rings.map((g, i) => ({ name: req.spec!.rings[i]!.name, hosts: g.length, updates: g.reduce((sum, a) => sum + updatesFor(req.spec!, a), 0) })),
          hosts: rings.flatMap((g, i) => [...g].sort((a, b) => a.hostname.localeCompare(b.hostname)).map((a) => ({ agentId: a.id, hostname: a.hostname, ring: i, updates: updatesFor(req.spec!, a) }))),
          hostCount: rings.reduce((sum, g) => sum + g.length, 0),
        };
      },
      createRollout(req) {
        const spec = req.spec!;
        if (rollouts.some((r) => r.spec?.name === spec.name)) throw rolloutNameTaken(spec.name);
        const rings = place(spec);
        created.push(req);
        const r = create(RolloutSchema, {
          id: `00000000-0000-4000-8000-${String(++n).padStart(12, "0")}`,
          spec,
          state: RolloutState.RUNNING,
          createdBy: "olu",
          createTime: timestampNow(),
          rings: spec.rings.map((g, i) =>
            create(RolloutRingProgressSchema, { index: i, name: g.name, state: RolloutRingState.WAITING, successThresholdPercent: g.successThresholdPercent || 100 }),
          ),
        });
        hostsOf.set(
          r.id,
          rings.flatMap((g, i) => g.map((a) => create(RolloutHostSchema, { agentId: a.id, hostname: a.hostname, ring: i, state: RolloutHostState.WAITING }))),
        );
        rollouts.push(r);
        startRing(r, 0);
        return { rollout: refresh(r) };
      },
      pauseRollout(req) {
        const r = find(req.id);
        if (r.state !== RolloutState.RUNNING) throw refused(r, "pause");
        actions.push(`pause ${r.id}`);
        r.state = RolloutState.PAUSED;
        return { rollout: refresh(r) };
      },
      resumeRollout(req) {
        const r = find(req.id);
        if (r.state !== RolloutState.PAUSED && r.state !== RolloutState.HALTED) throw refused(r, "resume");
        actions.push(`resume ${r.id}`);
        if (r.state === RolloutState.HALTED) {
          const ring = r.currentRing;
          r.rings[ring]!.state = RolloutRingState.OVERRIDDEN;
          for (const h of hostsOf.get(r.id) ?? []) if (h.ring === ring && h.state === RolloutHostState.WAITING) h.state = RolloutHostState.SKIPPED;
          r.haltReason = "";
          r.state = RolloutState.RUNNING;
          startRing(r, ring + 1);
        } else {
          r.state = RolloutState.RUNNING;
        }
        return { rollout: refresh(r) };
      },
      abortRollout(req) {
        const r = find(req.id);
        if (r.state === RolloutState.ABORTED || r.state === RolloutState.FINISHED) throw refused(r, "abort");
        actions.push(`abort ${r.id}`);
        r.state = RolloutState.ABORTED;
        r.endTime = timestampNow();
        for (const h of hostsOf.get(r.id) ?? []) if (h.state === RolloutHostState.WAITING) h.state = RolloutHostState.SKIPPED;
        return { rollout: refresh(r) };
      },
    });
  };

  return {
    routes,
    rollouts,
    created,
    previews,
    actions,
    hosts: (id: string) => hostsOf.get(id) ?? [],
    // An agent's install ended (or began), as its report would move it.
    setHost(id: string, hostname: string, state: RolloutHostState, fields: Partial<RolloutHost> = {}) {
      const h = (hostsOf.get(id) ?? []).find((x) => x.hostname === hostname);
      if (!h) throw new Error(`no host ${hostname} in rollout ${id}`);
      Object.assign(h, { state, ...fields });
    },
    // The scheduler halted the rollout at its current ring.
    halt(id: string, reason: string) {
      const r = find(id);
      r.state = RolloutState.HALTED;
      r.haltReason = reason;
      r.rings[r.currentRing]!.state = RolloutRingState.HALTED;
    },
    // Every host of the current ring ended and the threshold was met: soaking until `until`.
    soak(id: string, until: Date) {
      const r = find(id);
      r.rings[r.currentRing]!.state = RolloutRingState.SOAKING;
      r.rings[r.currentRing]!.soakUntil = timestampFromDate(until);
    },
  };
}
