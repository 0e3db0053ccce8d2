import type { Statements } from "./statements.ts";
import type { Prisma as PrismaNs } from "../generated/prisma/client.ts";
import { newId } from "../ids.ts";
import { StoreRefusal } from "./refusal.ts";
import { isUniqueViolation } from "./db.ts";
import { recordSecurityEvent } from "./security-events.ts";
import { bytes, type Prisma, type Tx } from "./types.ts";

export interface AgentOs {
  family: string;
  name: string;
  version: string;
  kernel: string;
  arch: string;
}

export interface NewRefreshToken {
  tokenHash: Buffer;
  expiresAt: Date;
  absoluteExpiresAt: Date;
}

// A RegisterProof, already decoded: who signed it is checked against the key on record.
export interface RegisterProofInput {
  signTime: Date;
  // Whether proof_signature is Ed25519 by this public key over PAE("redflag.v1.RegisterProof", proof).
  signedBy(publicKey: Uint8Array): boolean;
}

export interface RegisterInput {
  registrationTokenHash: Buffer;
  hostname: string;
  machineId: string;
  publicKey: Uint8Array;
  os: AgentOs;
  agentVersion: string;
  refresh: NewRefreshToken;
  now: Date;
  remoteAddr: string;
  // The request's proof (its machine ID and public key already checked against the request).
  proof: RegisterProofInput | undefined;
  // How far a proof's sign time may be from the server's clock.
  maxProofSkewMs: number;
}

export interface RegisteredAgent {
  id: string;
  machineId: string;
  credentialGeneration: number;
  replaced: boolean;
  // How a re-registration was let through: the agent's key, or an admin's permission.
  via: "new" | "proof" | "allowed";
}

// Why a re-registration of a known machine was refused; recorded as a security event.
type Refusal = { refused: { reason: string; severity: "warning" | "critical"; message: string; agentId: string } };

// The command an admin runs to let one re-registration through (printed in refusals).
export const allowReregistrationCommand = (agentId: string) => `redflag agents allow-reregistration ${agentId}`;

// Registers a machine, or replaces the credentials of the agent already bound to it, in one
// transaction. The seat is taken by the transaction's last statement, a conditional increment
// of the token's row: seats are never over-spent, and concurrent registrations with one token
// (a fleet enrolling at once) wait on that row only for the moment before their commit.
//
// A machine already registered is taken over only by the agent that holds its key (a proof
// signed by the key on record, newer than the last one accepted) or once after an admin allowed
// it; a decommissioned agent only after an admin allowed it. Anything else is refused with
// PermissionDenied and a security event, and changes nothing else.
//
// A machine never seen before, with a valid token and a seat left (a fleet enrolling), takes the
// one-statement path first (registerNewMachine); anything else, and a first registration that
// lost a race for its machine ID, goes through the transaction below, which gives the refusal.
export async function registerAgent(db: Prisma, sql: Statements, input: RegisterInput): Promise<RegisteredAgent> {
  // Checked once, before the transaction: an agent re-registering keeps its key, so this is the
  // only signature check in the common case, and no row waits on it.
  const selfSigned = input.proof?.signedBy(input.publicKey) ?? false;
  if (!input.proof || selfSigned) {
    const registered = await registerNewMachine(sql, input).catch((err: unknown) => {
      if (isUniqueViolation(err)) return undefined;
      throw err;
    });
    if (registered) return registered;
  }
  for (let attempt = 0; ; attempt++) {
    let outcome: RegisteredAgent | Refusal;
    try {
      outcome = await db.$transaction((tx) => registerInTx(tx, input, selfSigned));
    } catch (err) {
      // Two first registrations of one machine raced on the unique machine_id: the loser retries
      // and becomes a re-registration.
      if (attempt === 0 && isUniqueViolation(err)) continue;
      throw err;
    }
    if (!("refused" in outcome)) return outcome;
    const r = outcome.refused;
    await recordSecurityEvent(db, {
      type: "registration_refused",
      severity: r.severity,
      message: `a registration for the machine of agent ${r.agentId} was refused: ${r.reason}`,
      agentId: r.agentId,
      machineId: input.machineId,
      remoteAddr: input.remoteAddr || undefined,
      detail: { reason: r.reason, hostname: input.hostname.slice(0, 253) },
    });
    throw new StoreRefusal("forbidden", r.message);
  }
}

// A first registration in one prepared statement (an enrolment herd's Register: one round trip,
// no interactive transaction). The token's row is updated only if the token is valid, has a seat
// left and no agent holds the machine ID; then the agent, its refresh-token family and its first
// refresh token are inserted from that row. It all commits or nothing does: a machine registered
// meanwhile makes the insert a unique violation that undoes the seat too, and the row lock with
// PostgreSQL's re-check of `used_seats < seats` on the newest row version means concurrent
// registrations never over-spend seats. No row means "not this path": the caller decides the
// refusal or the re-registration in the transaction.
// The proof's sign time, recorded as the newest proof seen: kept only within the allowed skew,
// so a wild clock cannot block the agent's later proofs.
function keptProofTime({ proof, now, maxProofSkewMs }: RegisterInput): Date | null {
  return proof && Math.abs(proof.signTime.getTime() - now.getTime()) <= maxProofSkewMs ? proof.signTime : null;
}

async function registerNewMachine(sql: Statements, input: RegisterInput): Promise<RegisteredAgent | undefined> {
  const { now } = input;
  const proofTime = keptProofTime(input);
  const id = newId();
  const rows = await sql.rows<{ credential_generation: number }>("register_new_machine", REGISTER_NEW_MACHINE, [
    input.registrationTokenHash,
    now,
    input.machineId,
    id,
    input.hostname,
    Buffer.from(input.publicKey),
    input.os.family,
    input.os.name,
    input.os.version,
    input.os.kernel,
    input.os.arch,
    input.agentVersion,
    proofTime,
    newId(),
    input.refresh.absoluteExpiresAt,
    newId(),
    Buffer.from(input.refresh.tokenHash),
    input.refresh.expiresAt,
  ]);
  const [row] = rows;
  if (!row) return undefined;
  return { id, machineId: input.machineId, credentialGeneration: row.credential_generation, replaced: false, via: "new" };
}

const REGISTER_NEW_MACHINE = `
WITH seat AS (
  UPDATE registration_tokens SET used_seats = used_seats + 1
   WHERE token_hash = $1 AND used_seats < seats AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
     AND NOT EXISTS (SELECT 1 FROM agents WHERE machine_id = $3)
  RETURNING id
), agent AS (
  INSERT INTO agents (id, machine_id, hostname, public_key, os_family, os_name, os_version, kernel, arch, agent_version,
                      registration_token_id, registered_at, register_proof_time, updated_at)
  SELECT $4::uuid, $3, $5, $6, $7, $8, $9, $10, $11, $12, seat.id, $2, $13, $2 FROM seat
  RETURNING id, credential_generation
), family AS (
  INSERT INTO refresh_token_families (id, agent_id, absolute_expires_at)
  SELECT $14::uuid, agent.id, $15 FROM agent
  RETURNING id
), token AS (
  INSERT INTO refresh_tokens (id, family_id, token_hash, expires_at)
  SELECT $16::uuid, family.id, $17, $18 FROM family
  RETURNING 1
)
SELECT agent.credential_generation FROM agent, token`;

async function registerInTx(tx: Tx, input: RegisterInput, selfSigned: boolean): Promise<RegisteredAgent | Refusal> {
  const [token] = await tx.$queryRaw<TokenRow[]>`
    SELECT id, seats, used_seats, expires_at, revoked_at FROM registration_tokens
     WHERE token_hash = ${input.registrationTokenHash}`;
  if (!token) throw new StoreRefusal("unauthenticated", "registration token is not valid");
  refuseToken(token, input.now);

  const existing = await tx.agent.findUnique({
    where: { machineId: input.machineId },
    select: {
      id: true,
      hostname: true,
      registrationTokenId: true,
      credentialGeneration: true,
      publicKey: true,
      decommissionedAt: true,
      reregistrationAllowedUntil: true,
      reregistrationAllowedBy: true,
      registerProofTime: true,
    },
  });
  let via: RegisteredAgent["via"] = "new";
  let proofTime: Date | null = null;
  if (!existing) {
    if (input.proof && !selfSigned) {
      throw new StoreRefusal("forbidden", "proof_signature does not verify with agent_public_key");
    }
    proofTime = keptProofTime(input);
  } else {
    const checked = await admitReregistration(tx, existing, input, selfSigned);
    if ("refused" in checked) return checked;
    ({ via, proofTime } = checked);
  }
  // Re-registering a machine with the token it already used costs no further seat.
  const needsSeat = !existing || existing.registrationTokenId !== token.id;
  if (needsSeat && token.used_seats >= token.seats) throw noSeats(token);

  const fields = {
    hostname: input.hostname,
    publicKey: bytes(input.publicKey),
    osFamily: input.os.family,
    osName: input.os.name,
    osVersion: input.os.version,
    kernel: input.os.kernel,
    arch: input.os.arch,
    agentVersion: input.agentVersion,
    registrationTokenId: token.id,
    registeredAt: input.now,
    decommissionedAt: null,
    reregistrationAllowedUntil: null,
    reregistrationAllowedBy: null,
    registerProofTime: proofTime,
  };
  let agent: { id: string; credentialGeneration: number };
  if (existing) {
    const keyChanged = !Buffer.from(existing.publicKey).equals(Buffer.from(input.publicKey));
    await recordSecurityEvent(tx, {
      type: "agent_reregistered",
      severity: via === "allowed" ? "warning" : "info",
      message:
        via === "allowed"
          ? `${input.hostname} registered again as an admin allowed${existing.decommissionedAt ? " (it was decommissioned)" : ""}`
          : `${input.hostname} registered again, proving possession of its key`,
      agentId: existing.id,
      machineId: input.machineId,
      remoteAddr: input.remoteAddr || undefined,
      detail: {
        via,
        keyChanged,
        wasDecommissioned: existing.decommissionedAt !== null,
        ...(via === "allowed" ? { allowedBy: existing.reregistrationAllowedBy ?? "" } : {}),
        ...(existing.hostname !== input.hostname ? { previousHostname: existing.hostname } : {}),
      },
    });
    await tx.refreshTokenFamily.updateMany({
      where: { agentId: existing.id, revokedAt: null },
      data: { revokedAt: input.now, revokeReason: "agent re-registered" },
    });
    agent = await tx.agent.update({
      where: { id: existing.id },
      data: { ...fields, credentialGeneration: { increment: 1 } },
      select: { id: true, credentialGeneration: true },
    });
  } else {
    agent = await tx.agent.create({
      data: { id: newId(), machineId: input.machineId, ...fields },
      select: { id: true, credentialGeneration: true },
    });
  }

  await tx.refreshTokenFamily.create({
    data: {
      id: newId(),
      agentId: agent.id,
      absoluteExpiresAt: input.refresh.absoluteExpiresAt,
      tokens: { create: { id: newId(), tokenHash: bytes(input.refresh.tokenHash), expiresAt: input.refresh.expiresAt } },
    },
  });
  // Last, so the token's row is locked only until the commit that follows. The conditions are
  // checked again under the lock: a revocation or the last seat taken meanwhile wins.
  const [held] = needsSeat
    ? await tx.$queryRaw<{ ok: number }[]>`
        UPDATE registration_tokens SET used_seats = used_seats + 1
         WHERE id = ${token.id}::uuid AND used_seats < seats AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > ${input.now})
        RETURNING 1 AS ok`
    : await tx.$queryRaw<{ ok: number }[]>`
        SELECT 1 AS ok FROM registration_tokens
         WHERE id = ${token.id}::uuid AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${input.now})
           FOR SHARE`;
  if (!held) {
    const [now] = await tx.$queryRaw<TokenRow[]>`
      SELECT id, seats, used_seats, expires_at, revoked_at FROM registration_tokens WHERE id = ${token.id}::uuid`;
    if (now) refuseToken(now, input.now);
    throw now ? noSeats(now) : new StoreRefusal("unauthenticated", "registration token is not valid");
  }
  return { ...agent, machineId: input.machineId, replaced: Boolean(existing), via };
}

interface KnownMachine {
  id: string;
  publicKey: Uint8Array;
  decommissionedAt: Date | null;
  reregistrationAllowedUntil: Date | null;
  registerProofTime: Date | null;
}

// Decides whether a Register for a machine that already has an agent may replace it. The
// admin's permission and the proof time are consumed with conditional updates, so two
// concurrent requests can never both use one.
async function admitReregistration(
  tx: Tx,
  existing: KnownMachine,
  input: RegisterInput,
  selfSigned: boolean,
): Promise<{ via: "proof" | "allowed"; proofTime: Date | null } | Refusal> {
  const { now, proof } = input;
  const refuse = (reason: string, severity: "warning" | "critical", message: string): Refusal => ({
    refused: { reason, severity, message, agentId: existing.id },
  });
  const hint = `if the host was reinstalled or lost its key, an admin can allow one re-registration: ${allowReregistrationCommand(existing.id)}`;
  if (existing.reregistrationAllowedUntil && existing.reregistrationAllowedUntil > now) {
    const taken = await tx.agent.updateMany({
      where: { id: existing.id, reregistrationAllowedUntil: { gt: now } },
      data: { reregistrationAllowedUntil: null },
    });
    if (taken.count === 1) {
      return { via: "allowed", proofTime: selfSigned ? keptProofTime(input) : null };
    }
  }
  if (existing.decommissionedAt) {
    return refuse(
      "agent decommissioned",
      "warning",
      `this machine's agent ${existing.id} was decommissioned and stays out until an admin lets it back: ${allowReregistrationCommand(existing.id)}`,
    );
  }
  if (!proof) {
    return refuse(
      "no proof of the agent's key",
      "critical",
      `this machine is already registered as agent ${existing.id}, and the request does not prove possession of that agent's key; ${hint}`,
    );
  }
  const skewMs = Math.abs(proof.signTime.getTime() - now.getTime());
  if (skewMs > input.maxProofSkewMs) {
    return refuse(
      "proof signed too far from the server's clock",
      "warning",
      `the registration proof was signed ${Math.round(skewMs / 1000)}s away from the server's clock; check the agent's time`,
    );
  }
  const sameKey = Buffer.from(existing.publicKey).equals(Buffer.from(input.publicKey));
  if (!(sameKey ? selfSigned : proof.signedBy(existing.publicKey))) {
    return refuse(
      "proof not signed by the agent's key",
      "critical",
      `this machine is already registered as agent ${existing.id}, and the registration proof is not signed by that agent's key; ${hint}`,
    );
  }
  // Each proof is good once: its sign time must be later than the last one accepted.
  const fresh = await tx.agent.updateMany({
    where: { id: existing.id, OR: [{ registerProofTime: null }, { registerProofTime: { lt: proof.signTime } }] },
    data: { registerProofTime: proof.signTime },
  });
  if (fresh.count !== 1) {
    return refuse("proof replayed", "critical", "this registration proof was already used; the agent signs a new one for every registration");
  }
  return { via: "proof", proofTime: proof.signTime };
}

// Lets one Register of the agent's machine through until `until`, with or without the agent's
// key, also when it is decommissioned. Returns undefined for an unknown agent. Call it inside a
// transaction (inTransaction).
export async function allowReregistration(tx: Tx, agentId: string, until: Date, by: string): Promise<{ before: Date | null } | undefined> {
  const row = await tx.agent.findUnique({ where: { id: agentId }, select: { reregistrationAllowedUntil: true } });
  if (!row) return undefined;
  await tx.agent.update({ where: { id: agentId }, data: { reregistrationAllowedUntil: until, reregistrationAllowedBy: by } });
  return { before: row.reregistrationAllowedUntil };
}

interface TokenRow {
  id: string;
  seats: number;
  used_seats: number;
  expires_at: Date | null;
  revoked_at: Date | null;
}

function refuseToken(token: TokenRow, now: Date) {
  if (token.revoked_at) throw new StoreRefusal("unauthenticated", "registration token has been revoked");
  if (token.expires_at && token.expires_at <= now) {
    throw new StoreRefusal("unauthenticated", `registration token expired at ${token.expires_at.toISOString()}`);
  }
}

const noSeats = (token: TokenRow) =>
  new StoreRefusal("exhausted", `registration token has no seats left (${token.used_seats} of ${token.seats} used)`);

export interface AgentAuthState {
  machineId: string;
  credentialGeneration: number;
  decommissioned: boolean;
  publicKey: Uint8Array;
}

interface AuthStateRow {
  id: string;
  machine_id: string;
  credential_generation: number;
  decommissioned: boolean;
  public_key: Buffer;
}

const AUTH_STATE_COLUMNS = "id, machine_id, credential_generation, decommissioned_at IS NOT NULL AS decommissioned, public_key";

export async function getAgentAuthState(sql: Statements, agentId: string): Promise<AgentAuthState | undefined> {
  const [row] = await sql.rows<AuthStateRow>("agent_auth_state", `SELECT ${AUTH_STATE_COLUMNS} FROM agents WHERE id = $1::uuid`, [agentId]);
  return row ? authState(row) : undefined;
}

// The same for many agents in one query (the registry's batched cache misses); an unknown ID
// is simply absent from the result.
export async function getAgentAuthStates(sql: Statements, agentIds: string[]): Promise<Map<string, AgentAuthState>> {
  const rows = await sql.rows<AuthStateRow>("agent_auth_states", `SELECT ${AUTH_STATE_COLUMNS} FROM agents WHERE id = ANY($1::uuid[])`, [agentIds]);
  return new Map(rows.map((row) => [row.id, authState(row)]));
}

function authState(row: AuthStateRow): AgentAuthState {
  return {
    machineId: row.machine_id,
    credentialGeneration: row.credential_generation,
    decommissioned: row.decommissioned,
    publicKey: new Uint8Array(row.public_key),
  };
}

export type RotateOutcome =
  | { ok: true; credentialGeneration: number; retried: boolean }
  | { ok: false; reason: string; reuse: boolean };

// Exchanges a refresh token for its successor. Presenting a token that was already exchanged
// means it was copied: the whole family is revoked, the agent's credential generation moves on
// (so the access tokens issued so far stop working too) and a security event is recorded, all
// committed even though the caller then refuses the request.
// One exception: the successor is derived from the signed request (`next.tokenHash` is the hash
// of that derivation), so a token rotated less than `retryWindowMs` ago whose successor is the
// one this request would get was exchanged by this very request, whose answer was lost. If that
// successor has not been used yet, the exchange is answered again instead of revoking.
export async function rotateRefreshToken(
  db: Prisma,
  sql: Statements,
  input: {
    agentId: string;
    machineId: string;
    presentedHash: Buffer;
    next: NewRefreshToken;
    now: Date;
    remoteAddr: string;
    retryWindowMs: number;
    // How long after a restore an unknown refresh token may be recovered (recoverAfterRestore).
    restoreWindowMs: number;
  },
): Promise<RotateOutcome> {
  const fast = await rotateCurrentToken(sql, input);
  if (fast !== undefined) return { ok: true, credentialGeneration: fast, retried: false };
  return db.$transaction(async (tx) => {
    const [row] = await tx.$queryRaw<
      {
        token_id: string;
        family_id: string;
        expires_at: Date;
        rotated_at: Date | null;
        agent_id: string;
        absolute_expires_at: Date;
        family_revoked_at: Date | null;
      }[]
    >`SELECT t.id AS token_id, t.family_id, t.expires_at, t.rotated_at,
             f.agent_id, f.absolute_expires_at, f.revoked_at AS family_revoked_at
        FROM refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id
       WHERE t.token_hash = ${input.presentedHash}
       FOR UPDATE OF t, f`;
    if (!row) {
      if (await recoverAfterRestore(tx, input)) return { ok: true, credentialGeneration: await generationOf(tx, input.agentId), retried: false };
      return { ok: false, reason: "refresh token is not valid", reuse: false };
    }
    if (row.agent_id !== input.agentId) return { ok: false, reason: "refresh token is not valid", reuse: false };
    if (row.family_revoked_at) return { ok: false, reason: "refresh token has been revoked", reuse: false };
    const generation = () => generationOf(tx, input.agentId);
    if (row.rotated_at) {
      if (input.now.getTime() - row.rotated_at.getTime() <= input.retryWindowMs) {
        const [successor] = await tx.$queryRaw<{ rotated_at: Date | null }[]>`
          SELECT rotated_at FROM refresh_tokens
           WHERE token_hash = ${input.next.tokenHash} AND family_id = ${row.family_id}::uuid
           FOR UPDATE`;
        if (successor && !successor.rotated_at) return { ok: true, credentialGeneration: await generation(), retried: true };
      }
      await tx.refreshTokenFamily.update({
        where: { id: row.family_id },
        data: { revokedAt: input.now, revokeReason: "refresh token re-use" },
      });
      await tx.agent.update({ where: { id: input.agentId }, data: { credentialGeneration: { increment: 1 } } });
      await recordSecurityEvent(tx, {
        type: "refresh_token_reuse",
        severity: "critical",
        message: "a rotated refresh token was presented again; the agent's token family and access tokens are revoked",
        agentId: input.agentId,
        machineId: input.machineId,
        remoteAddr: input.remoteAddr,
        detail: { familyId: row.family_id },
      });
      return { ok: false, reason: "refresh token was already used; the agent's credentials are revoked", reuse: true };
    }
    if (row.expires_at <= input.now || row.absolute_expires_at <= input.now) {
      return { ok: false, reason: "refresh token has expired", reuse: false };
    }
    await tx.refreshToken.update({ where: { id: row.token_id }, data: { rotatedAt: input.now } });
    const expiresAt = new Date(Math.min(input.next.expiresAt.getTime(), row.absolute_expires_at.getTime()));
    await tx.refreshToken.create({
      data: { id: newId(), familyId: row.family_id, tokenHash: bytes(input.next.tokenHash), expiresAt },
    });
    return { ok: true, credentialGeneration: await generation(), retried: false };
  });
}

// The common Renew in one prepared statement: the presented token is the agent's current one (not
// rotated, not expired, its family live), so it is marked rotated and its successor inserted,
// under the same row locks the transaction takes. Anything else (an unknown, rotated, expired or
// revoked token, a retry, a race with another Renew of the same token, which re-checks
// `rotated_at IS NULL` on the locked row and finds it set) returns nothing, and the transaction
// below decides, with its security events.
async function rotateCurrentToken(sql: Statements, input: { agentId: string; presentedHash: Buffer; next: NewRefreshToken; now: Date }): Promise<number | undefined> {
  const [row] = await sql.rows<{ credential_generation: number }>("rotate_current_refresh_token", ROTATE_CURRENT_TOKEN, [
    input.presentedHash,
    input.agentId,
    input.now,
    newId(),
    Buffer.from(input.next.tokenHash),
    input.next.expiresAt,
  ]);
  return row?.credential_generation;
}

const ROTATE_CURRENT_TOKEN = `
WITH current AS (
  SELECT t.id, t.family_id, f.absolute_expires_at
    FROM refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id
   WHERE t.token_hash = $1 AND f.agent_id = $2::uuid AND t.rotated_at IS NULL AND f.revoked_at IS NULL
     AND t.expires_at > $3 AND f.absolute_expires_at > $3
   FOR UPDATE OF t, f
), rotated AS (
  UPDATE refresh_tokens SET rotated_at = $3 FROM current
   WHERE refresh_tokens.id = current.id AND refresh_tokens.rotated_at IS NULL
  RETURNING current.family_id, current.absolute_expires_at
), successor AS (
  INSERT INTO refresh_tokens (id, family_id, token_hash, expires_at)
  SELECT $4::uuid, family_id, $5, LEAST($6::timestamptz, absolute_expires_at) FROM rotated
  RETURNING 1
)
SELECT a.credential_generation FROM agents a, successor WHERE a.id = $2::uuid`;

const generationOf = async (tx: Tx, agentId: string) =>
  (await tx.agent.findUniqueOrThrow({ where: { id: agentId }, select: { credentialGeneration: true } })).credentialGeneration;

// A database restored from a backup never saw the refresh tokens its agents got by renewing
// after the backup was taken. For a refresh token's lifetime after a restore, an agent that has
// not renewed since gets a successor for a token the database does not know, in its newest live
// family, once: the Renew is signed with the key the agent registered (the caller checked), the
// same proof a refresh token stands beside. It is recorded as a security event, and the agent's
// next Renew follows the ordinary rules again.
async function recoverAfterRestore(tx: Tx, input: { agentId: string; machineId: string; next: NewRefreshToken; now: Date; remoteAddr: string; restoreWindowMs: number }): Promise<boolean> {
  const since = new Date(input.now.getTime() - input.restoreWindowMs);
  const [restore] = await tx.$queryRaw<{ restored_at: Date; backup_taken_at: Date }[]>`
    SELECT restored_at, backup_taken_at FROM restores WHERE restored_at > ${since} ORDER BY restored_at DESC LIMIT 1`;
  if (!restore) return false;
  const [family] = await tx.$queryRaw<{ id: string; absolute_expires_at: Date }[]>`
    SELECT f.id, f.absolute_expires_at FROM refresh_token_families f JOIN agents a ON a.id = f.agent_id
     WHERE f.agent_id = ${input.agentId}::uuid AND f.revoked_at IS NULL AND f.absolute_expires_at > ${input.now}
       AND a.decommissioned_at IS NULL AND a.machine_id = ${input.machineId}
       AND NOT EXISTS (SELECT 1 FROM refresh_tokens t JOIN refresh_token_families g ON g.id = t.family_id
                        WHERE g.agent_id = ${input.agentId}::uuid AND t.created_at >= ${restore.restored_at})
     ORDER BY f.created_at DESC LIMIT 1
     FOR UPDATE OF f, a`;
  if (!family) return false;
  await tx.refreshToken.updateMany({ where: { familyId: family.id, rotatedAt: null }, data: { rotatedAt: input.now } });
  const expiresAt = new Date(Math.min(input.next.expiresAt.getTime(), family.absolute_expires_at.getTime()));
  await tx.refreshToken.create({ data: { id: newId(), familyId: family.id, tokenHash: bytes(input.next.tokenHash), expiresAt } });
  await recordSecurityEvent(tx, {
    type: "agent_recovered_after_restore",
    severity: "warning",
    message: `the agent renewed with a refresh token issued after the backup of ${restore.backup_taken_at.toISOString()} was taken; its signed request was accepted once after the restore`,
    agentId: input.agentId,
    machineId: input.machineId,
    remoteAddr: input.remoteAddr,
    detail: { familyId: family.id },
  });
  return true;
}

const agentListSelect = {
  id: true,
  hostname: true,
  machineId: true,
  osFamily: true,
  osName: true,
  osVersion: true,
  kernel: true,
  arch: true,
  agentVersion: true,
  registeredAt: true,
  lastSeenAt: true,
  decommissionedAt: true,
  reregistrationAllowedUntil: true,
  status: true,
  registrationTokenId: true,
  lastScanAt: true,
  tags: true,
  group: true,
  rebootRequired: true,
  rebootOverdueSince: true,
} as const;

export interface UpdateCounts {
  pending: number;
  security: number;
  bySeverity: Record<string, number>;
}

export type AgentRow = NonNullable<Awaited<ReturnType<typeof findAgent>>> & { updates: UpdateCounts };

const findAgent = (db: Prisma | Tx, id: string) => db.agent.findUnique({ where: { id }, select: agentListSelect });

// Pending and security update counts per agent, from the stored scan results: updates awaiting
// a decision or an install, not the rejected ones (as in the fleet's pending-updates report).
async function updateCounts(db: Prisma | Tx, agentIds: string[]): Promise<Map<string, UpdateCounts>> {
  const counts = new Map<string, UpdateCounts>(agentIds.map((id) => [id, { pending: 0, security: 0, bySeverity: {} }]));
  if (agentIds.length === 0) return counts;
  const rows = await db.packageUpdate.groupBy({
    by: ["agentId", "security", "severity"],
    where: { agentId: { in: agentIds }, status: { not: "rejected" } },
    _count: { _all: true },
  });
  for (const row of rows) {
    const c = counts.get(row.agentId)!;
    c.pending += row._count._all;
    if (row.security) c.security += row._count._all;
    c.bySeverity[row.severity] = (c.bySeverity[row.severity] ?? 0) + row._count._all;
  }
  return counts;
}

export interface AgentListQuery {
  where?: PrismaNs.AgentWhereInput;
  orderBy?: PrismaNs.AgentOrderByWithRelationInput[];
}

// Health by when an agent was last heard from: since `online` it is online, since `offline`
// offline, before that stale (see services/convert.ts agentHealth).
export type AgentHealthName = "online" | "offline" | "stale" | "never_reported" | "decommissioned";
export interface HealthCutoffs {
  online: Date;
  offline: Date;
}

export function healthWhere(health: AgentHealthName, { online, offline }: HealthCutoffs): PrismaNs.AgentWhereInput {
  switch (health) {
    case "online":
      return { decommissionedAt: null, lastSeenAt: { gte: online } };
    case "offline":
      return { decommissionedAt: null, lastSeenAt: { lt: online, gte: offline } };
    case "stale":
      return { decommissionedAt: null, lastSeenAt: { lt: offline } };
    case "never_reported":
      return { decommissionedAt: null, lastSeenAt: null };
    case "decommissioned":
      return { decommissionedAt: { not: null } };
  }
}

// How many agents have each health, in the same order.
export async function countAgentsByHealth(db: Prisma, healths: AgentHealthName[], cutoffs: HealthCutoffs): Promise<number[]> {
  return Promise.all(healths.map((h) => db.agent.count({ where: healthWhere(h, cutoffs) })));
}

// What ListAgents filters on (already checked); every set field must match.
export interface AgentFilter {
  health?: { name: AgentHealthName; cutoffs: HealthCutoffs } | undefined;
  osFamily?: string | undefined;
  tag?: string | undefined;
  group?: string | undefined;
  // Part of the hostname or OS name, any case, or the agent ID.
  search?: { text: string; id: string | undefined } | undefined;
  hostname?: string | undefined;
  agentIds?: string[] | undefined;
  // Only agents whose host needs a reboot.
  rebootRequired?: boolean | undefined;
}

export interface AgentOrder {
  by: "hostname" | "last_seen" | "registered";
  descending: boolean;
}

// Agents whose hostname is exactly this one, ignoring case. Prisma sends a case-insensitive
// `equals` as ILIKE with the value as it is, where "_" and "%" would match other characters:
// they (and the escape character itself) are escaped.
function hostnameIs(hostname: string): PrismaNs.AgentWhereInput {
  return { hostname: { equals: hostname.replace(/[\\%_]/g, "\\$&"), mode: "insensitive" } };
}

// A page of the agents that match, in this order (ties by ID).
export function findAgents(db: Prisma, pageSize: number, after: string | undefined, filter: AgentFilter, order: AgentOrder) {
  const and: PrismaNs.AgentWhereInput[] = [];
  if (filter.health) and.push(healthWhere(filter.health.name, filter.health.cutoffs));
  if (filter.osFamily) and.push({ osFamily: filter.osFamily });
  if (filter.tag) and.push({ tags: { has: filter.tag } });
  if (filter.group) and.push({ group: filter.group });
  if (filter.search) {
    const q = filter.search.text;
    const or: PrismaNs.AgentWhereInput[] = [{ hostname: { contains: q, mode: "insensitive" } }, { osName: { contains: q, mode: "insensitive" } }];
    if (filter.search.id) or.push({ id: filter.search.id });
    and.push({ OR: or });
  }
  if (filter.hostname) and.push(hostnameIs(filter.hostname));
  if (filter.agentIds && filter.agentIds.length > 0) and.push({ id: { in: filter.agentIds } });
  if (filter.rebootRequired) and.push({ rebootRequired: true });
  const dir = order.descending ? "desc" : "asc";
  const orderBy: PrismaNs.AgentOrderByWithRelationInput[] =
    order.by === "last_seen" ? [{ lastSeenAt: { sort: dir, nulls: "last" } }] : order.by === "registered" ? [{ registeredAt: dir }] : [{ hostname: dir }];
  return listAgents(db, pageSize, after, { where: { AND: and }, orderBy });
}

export async function listAgents(db: Prisma, pageSize: number, after: string | undefined, query: AgentListQuery = {}) {
  const rows = await db.agent.findMany({
    select: agentListSelect,
    where: query.where ?? {},
    orderBy: [...(query.orderBy ?? [{ hostname: "asc" }]), { id: "asc" }],
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
  });
  const page = rows.slice(0, pageSize);
  const counts = await updateCounts(db, page.map((r) => r.id));
  return {
    rows: page.map((r): AgentRow => ({ ...r, updates: counts.get(r.id)! })),
    next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined,
  };
}

export async function getAgent(db: Prisma | Tx, id: string): Promise<AgentRow | undefined> {
  const row = await findAgent(db, id);
  if (!row) return undefined;
  const counts = await updateCounts(db, [id]);
  return { ...row, updates: counts.get(id)! };
}

export async function setAgentLabels(db: Prisma | Tx, id: string, labels: { tags: string[]; group: string }): Promise<void> {
  await db.agent.update({ where: { id }, data: labels });
}

// An agent's own subsystem settings: a serialized AgentConfig, or null for none.
export async function agentConfigOverrides(db: Prisma | Tx, id: string): Promise<Uint8Array | null> {
  return (await db.agent.findUnique({ where: { id }, select: { config: true } }))?.config ?? null;
}

export async function setAgentConfigOverrides(db: Prisma | Tx, id: string, config: Uint8Array | null): Promise<void> {
  await db.agent.update({ where: { id }, data: { config: config ? Buffer.from(config) : null } });
}

// Every agent's own subsystem settings, for the agents that have any.
export function allAgentConfigOverrides(db: Prisma): Promise<{ id: string; config: Uint8Array | null }[]> {
  return db.agent.findMany({ where: { config: { not: null } }, select: { id: true, config: true } });
}

// Takes an agent out of the fleet in one transaction: its access tokens die with the generation
// bump, its refresh token families are revoked, its pending updates dropped and its pending
// commands cancelled (returns how many).
// Call it inside a transaction (inTransaction) so these happen together.
export async function decommissionAgent(tx: Tx, id: string, now: Date): Promise<number> {
  await tx.agent.update({ where: { id }, data: { decommissionedAt: now, credentialGeneration: { increment: 1 } } });
  await tx.refreshTokenFamily.updateMany({ where: { agentId: id, revokedAt: null }, data: { revokedAt: now, revokeReason: "decommissioned" } });
  await tx.packageUpdate.deleteMany({ where: { agentId: id } });
  return (await tx.command.updateMany({ where: { agentId: id, state: "pending" }, data: { state: "cancelled", finishedAt: now } })).count;
}

// Binds the agent to another machine ID; false when another agent has that one. Inside a
// transaction, a refusal aborts it: the caller's transaction must end there.
export async function setMachineId(db: Prisma | Tx, id: string, machineId: string): Promise<boolean> {
  try {
    await db.agent.update({ where: { id }, data: { machineId } });
    return true;
  } catch (err) {
    if (isUniqueViolation(err)) return false;
    throw err;
  }
}

// Applies buffered last-seen times and statuses in one statement. rebootRequired is the
// status's flag and agentVersion the version it reports (null when the poll carried no status).
export async function flushLastSeen(
  sql: Statements,
  entries: { agentId: string; at: Date; status: Uint8Array | null; rebootRequired: boolean | null; agentVersion?: string | null }[],
): Promise<void> {
  if (entries.length === 0) return;
  const ids = entries.map((e) => e.agentId);
  const times = entries.map((e) => e.at);
  const statuses = entries.map((e) => (e.status ? Buffer.from(e.status) : null));
  const reboots = entries.map((e) => e.rebootRequired);
  const versions = entries.map((e) => e.agentVersion ?? null);
  await sql.rows("redflag_flush_last_seen", FLUSH_LAST_SEEN, [ids, times, statuses, reboots, versions]);
}

const FLUSH_LAST_SEEN = `
    UPDATE agents AS a
       SET last_seen_at = GREATEST(COALESCE(a.last_seen_at, v.at), v.at),
           status = COALESCE(v.status, a.status),
           reboot_required = COALESCE(v.reboot_required, a.reboot_required),
           agent_version = COALESCE(v.agent_version, a.agent_version)
      FROM unnest($1::uuid[], $2::timestamptz[], $3::bytea[], $4::boolean[], $5::text[]) AS v(id, at, status, reboot_required, agent_version)
     WHERE a.id = v.id`;

// Agents heard from before `cutoff` (silent since), not decommissioned and not yet reported
// offline: marked as reported now, so each going-offline is told once. At most `limit` a round.
export async function markGoneOffline(tx: Tx, cutoff: Date, now: Date, limit: number): Promise<{ id: string; lastSeenAt: Date }[]> {
  const rows = await tx.$queryRaw<{ id: string; last_seen_at: Date }[]>`
    UPDATE agents SET offline_notified_at = ${now}
     WHERE id IN (SELECT id FROM agents
                   WHERE decommissioned_at IS NULL AND offline_notified_at IS NULL
                     AND last_seen_at IS NOT NULL AND last_seen_at < ${cutoff}
                   ORDER BY last_seen_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)
    RETURNING id, last_seen_at`;
  return rows.map((r) => ({ id: r.id, lastSeenAt: r.last_seen_at }));
}

// Agents reported offline that have polled since `cutoff` (or were decommissioned): the mark
// is cleared; the polling ones are returned, to be told as back.
export async function markBackOnline(tx: Tx, cutoff: Date, limit: number): Promise<{ id: string; offlineSince: Date }[]> {
  const rows = await tx.$queryRaw<{ id: string; offline_notified_at: Date; decommissioned_at: Date | null }[]>`
    UPDATE agents a SET offline_notified_at = NULL
      FROM (SELECT id, offline_notified_at FROM agents
             WHERE offline_notified_at IS NOT NULL AND (last_seen_at >= ${cutoff} OR decommissioned_at IS NOT NULL)
             LIMIT ${limit} FOR UPDATE SKIP LOCKED) b
     WHERE a.id = b.id
    RETURNING a.id, b.offline_notified_at, a.decommissioned_at`;
  return rows.filter((r) => !r.decommissioned_at).map((r) => ({ id: r.id, offlineSince: r.offline_notified_at }));
}

// Agents that report needing a reboot, not yet told: marked as told now. At most `limit`.
export async function markRebootRequired(tx: Tx, now: Date, limit: number): Promise<{ id: string }[]> {
  return tx.$queryRaw<{ id: string }[]>`
    UPDATE agents SET reboot_notified_at = ${now}
     WHERE id IN (SELECT id FROM agents
                   WHERE reboot_required AND reboot_notified_at IS NULL AND decommissioned_at IS NULL
                   LIMIT ${limit} FOR UPDATE SKIP LOCKED)
    RETURNING id`;
}

// Agents told as needing a reboot that no longer report it (rebooted, as a rule), or were
// decommissioned: the mark is cleared; the others are returned, to be told.
export async function markRebootDone(tx: Tx, limit: number): Promise<{ id: string; requiredSince: Date }[]> {
  const rows = await tx.$queryRaw<{ id: string; reboot_notified_at: Date; decommissioned_at: Date | null }[]>`
    UPDATE agents a SET reboot_notified_at = NULL
      FROM (SELECT id, reboot_notified_at FROM agents
             WHERE reboot_notified_at IS NOT NULL AND (NOT reboot_required OR decommissioned_at IS NOT NULL)
             LIMIT ${limit} FOR UPDATE SKIP LOCKED) b
     WHERE a.id = b.id
    RETURNING a.id, b.reboot_notified_at, a.decommissioned_at`;
  return rows.filter((r) => !r.decommissioned_at).map((r) => ({ id: r.id, requiredSince: r.reboot_notified_at }));
}
