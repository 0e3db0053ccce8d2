import type { Prisma } from "./types.ts";

// What the privilege rules for commands need to know about a host: what it reported (pending
// updates, and the update history), a dry run it ran, and its platform. Read-only.

const key = (source: string, name: string) => `${source}\0${name}`;

// The pending updates this agent reported for these names: "source\0name" → the architectures.
export async function reportedUpdates(db: Prisma, agentId: string, names: readonly string[]): Promise<Map<string, Set<string>>> {
  const found = new Map<string, Set<string>>();
  if (names.length === 0) return found;
  const rows = await db.packageUpdate.findMany({
    where: { agentId, name: { in: [...new Set(names)] } },
    select: { source: true, name: true, architecture: true },
  });
  for (const r of rows) {
    const k = key(r.source, r.name);
    found.set(k, (found.get(k) ?? new Set()).add(r.architecture));
  }
  return found;
}

// Whether this agent ever reported this package: pending now, or in its update history (found,
// installed or failed), "source\0name".
export async function everReported(db: Prisma, agentId: string, source: string, name: string): Promise<boolean> {
  const pending = await db.packageUpdate.count({ where: { agentId, source, name } });
  if (pending > 0) return true;
  return (await db.updateEvent.count({ where: { agentId, source, name } })) > 0;
}

// A command with its type, owner, state and the serialized result the agent reported.
export async function commandWithResult(db: Prisma, id: string) {
  return db.command.findUnique({
    where: { id },
    select: { agentId: true, type: true, state: true, result: { select: { result: true } } },
  });
}

// What an agent reported about itself at registration, for picking its build.
export async function agentPlatformFacts(db: Prisma, agentId: string) {
  return db.agent.findUnique({ where: { id: agentId }, select: { osFamily: true, arch: true, decommissionedAt: true } });
}
