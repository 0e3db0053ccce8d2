import type { CommandSigner } from "../signing/signer.ts";
import { ensureSigningKeys } from "../store/bootstrap.ts";
import type { Prisma } from "../store/types.ts";

// Re-reads the trusted keys: after a rotation here, and periodically so a rotation on another
// replica, or the end of a grace period, reaches this one's signer.
export async function reloadSigningKeys(db: Prisma, masterKey: Buffer, signer: CommandSigner): Promise<void> {
  const { active, trusted, issueTime } = await ensureSigningKeys(db, masterKey);
  const same = active.keyId === signer.activeKeyId && trusted.length === signer.trustedKeys().length && trusted.every((k) => signer.trustedKeys().some((t) => t.keyId === k.keyId));
  if (!same) signer.replace(active, trusted, issueTime);
}
