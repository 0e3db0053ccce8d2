// The updates selected on the Updates page, handed to a new rollout on the Rollouts page: one
// line per update, "<agent ID> <source> <package> [<architecture>]", the form the rollout's
// pasted list reads. Kept in memory for the next visit of the Rollouts page only (a reload
// forgets it: the selection was the Updates page's, not something to keep).
let handed = "";

type Key = { agentId: string; source: string; name: string; architecture: string };

export const updateKeyLine = (k: Key) => [k.agentId, k.source, k.name, k.architecture].filter(Boolean).join(" ");

export function handOverUpdates(keys: readonly Key[]): void {
  handed = keys.map(updateKeyLine).join("\n");
}

// What was handed over, once.
export function takeHandedOverUpdates(): string {
  const text = handed;
  handed = "";
  return text;
}
