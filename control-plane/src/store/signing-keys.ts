import type { Prisma } from "./types.ts";

// The signing keys as stored (never the sealed private key), newest first; only those named
// when ids is given. Creating and rotating them is bootstrap.ts's.
export async function listSigningKeys(db: Prisma, ids?: string[]) {
  return db.signingKey.findMany({
    where: ids ? { id: { in: ids } } : {},
    orderBy: { createdAt: "desc" },
    select: { id: true, algorithm: true, publicKey: true, active: true, createdAt: true, retiredAt: true },
  });
}
