import { create } from "@bufbuild/protobuf";
import { type UpdateKey, UpdateKeySchema } from "@redflag/gen/update_service_pb";
import { plural } from "#lib/plural.ts";
import { type Rollout, RolloutHostState, RolloutRingState, RolloutState } from "@redflag/gen/rollout_service_pb";

// Words and badges for a rollout's states, the page's own: each state has a word, so the
// colour is never the only signal.
export const ROLLOUT_STATES: Record<number, { label: string; badge: string }> = {
  [RolloutState.RUNNING]: { label: "running", badge: "warn" },
  [RolloutState.PAUSED]: { label: "paused", badge: "" },
  [RolloutState.HALTED]: { label: "halted", badge: "bad" },
  [RolloutState.ABORTED]: { label: "aborted", badge: "" },
  [RolloutState.FINISHED]: { label: "finished", badge: "ok" },
};
export const rolloutState = (s: RolloutState) => ROLLOUT_STATES[s] ?? { label: "unknown", badge: "" };

export const RING_STATES: Record<number, { label: string; badge: string }> = {
  [RolloutRingState.WAITING]: { label: "waiting", badge: "" },
  [RolloutRingState.INSTALLING]: { label: "installing", badge: "warn" },
  [RolloutRingState.SOAKING]: { label: "soaking", badge: "warn" },
  [RolloutRingState.PASSED]: { label: "passed", badge: "ok" },
  [RolloutRingState.HALTED]: { label: "halted", badge: "bad" },
  [RolloutRingState.OVERRIDDEN]: { label: "overridden", badge: "bad" },
};
export const ringState = (s: RolloutRingState) => RING_STATES[s] ?? { label: "unknown", badge: "" };

export const HOST_STATES: Record<number, { label: string; badge: string }> = {
  [RolloutHostState.WAITING]: { label: "waiting", badge: "" },
  [RolloutHostState.QUEUED]: { label: "installing", badge: "warn" },
  [RolloutHostState.SUCCEEDED]: { label: "succeeded", badge: "ok" },
  [RolloutHostState.FAILED]: { label: "failed", badge: "bad" },
  [RolloutHostState.NOTHING_TO_DO]: { label: "nothing to do", badge: "ok" },
  [RolloutHostState.SKIPPED]: { label: "skipped", badge: "" },
};
export const hostState = (s: RolloutHostState) => HOST_STATES[s] ?? { label: "unknown", badge: "" };

// A rollout that may still change: the page keeps refreshing while one is shown.
export const isLive = (r: Rollout) => r.state === RolloutState.RUNNING || r.state === RolloutState.PAUSED || r.state === RolloutState.HALTED;

// "2 of 3 (wave 1)"; "3 rings done" once finished.
export function ringPosition(r: Rollout): string {
  const total = r.rings.length;
  if (r.state === RolloutState.FINISHED || r.currentRing >= total) return `${plural(total, "ring")} done`;
  const ring = r.rings[r.currentRing];
  return `${r.currentRing + 1} of ${total}${ring ? ` (${ring.name})` : ""}`;
}

// Hosts that ended (succeeded, failed or skipped) out of all, over every ring.
export function overall(r: Rollout): { done: number; succeeded: number; failed: number; installing: number; waiting: number; skipped: number; hosts: number } {
  const sum = { done: 0, succeeded: 0, failed: 0, installing: 0, waiting: 0, skipped: 0, hosts: 0 };
  for (const g of r.rings) {
    sum.succeeded += g.succeeded;
    sum.failed += g.failed;
    sum.installing += g.installing;
    sum.waiting += g.waiting;
    sum.skipped += g.skipped;
    sum.hosts += g.hosts;
  }
  sum.done = sum.succeeded + sum.failed + sum.skipped;
  return sum;
}

// Lists typed as "a, b" or one per line.
export const list = (text: string) => text.split(/[\s,]+/).filter(Boolean);

// Updates pasted one per line as "<agent> <source> <package> [<architecture>]" (spaces, tabs
// or "/" between them, so `redflag rollouts create --update` values fit; the Updates page
// hands over its selection in the same form). The agent is a hostname or an ID, resolved by
// the form. A line that is not one throws, naming the line.
export function parseUpdateKeys(text: string): UpdateKey[] {
  const keys: UpdateKey[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const parts = line.split(/[\s/]+/);
    if (parts.length < 3 || parts.length > 4) {
      throw new Error(`line ${i + 1} ("${line.slice(0, 80)}") is not an update: write the agent (hostname or ID), the source, the package and (if it has one) the architecture, separated by spaces`);
    }
    keys.push(create(UpdateKeySchema, { agentId: parts[0], source: parts[1], name: parts[2], architecture: parts[3] ?? "" }));
  });
  return keys;
}

// The local time a soak ends, as a person reads a clock: "14:05", or "Mon 14:05" when it is
// not today.
export function clockTime(d: Date, now = new Date()): string {
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toDateString() === now.toDateString() ? time : `${d.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" })} ${time}`;
}
