import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { SecurityEventSchema, SecurityService, SigningKeyInfoSchema } from "@redflag/gen/security_service_pb";
import type { Config } from "../config.ts";
import type { Settings } from "../settings.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { kPrincipal, kRemoteAddr } from "../auth/context.ts";
import type { PrincipalResolver } from "../auth/principals.ts";
import { AdminKeyRevokeRefused, revokeBootstrapAdminKey, rotateSigningKey } from "../store/bootstrap.ts";
import { activeAdminKeys, activeAdmins, peopleWithoutTotp } from "../store/people.ts";
import { countSecurityEvents, listSecurityEvents, SECURITY_EVENT_TYPES } from "../store/security-events.ts";
import { listSigningKeys } from "../store/signing-keys.ts";
import { reloadSigningKeys } from "../domain/signing-keys.ts";
import { audit } from "./audit.ts";
import { fingerprintOf } from "@redflag/common/signing/key-ids";
import type { Prisma } from "../store/types.ts";
import { idPageToken, invalid, nextIdPageToken, pageSize, text } from "./validate.ts";

const EVENT_TYPES: readonly string[] = SECURITY_EVENT_TYPES;

export interface SecurityServiceDeps {
  db: Prisma;
  config: Config;
  masterKey: Buffer;
  signer: CommandSigner;
  principals: PrincipalResolver;
  settings: Pick<Settings, "commandExpirySeconds">;
}

const keyInfo = (k: { id: string; algorithm: string; publicKey: Uint8Array; active: boolean; createdAt: Date; retiredAt: Date | null }, now: number) =>
  create(SigningKeyInfoSchema, {
    keyId: k.id,
    fingerprint: fingerprintOf(k.publicKey),
    algorithm: k.algorithm === "ed25519" ? "Ed25519" : k.algorithm,
    state: k.active ? "active" : !k.retiredAt || k.retiredAt.getTime() > now ? "trusted" : "retired",
    createTime: timestampFromDate(k.createdAt),
    retireTime: k.retiredAt ? timestampFromDate(k.retiredAt) : undefined,
  });

export function createSecurityService(deps: SecurityServiceDeps): ServiceImpl<typeof SecurityService> {
  const { db, config } = deps;
  return {
    async getSecurityOverview() {
      const now = Date.now();
      const day = new Date(now - 86_400_000);
      const month = new Date(now - 30 * 86_400_000);
      const [keys, recent, older, adminKeys, withoutTotp, admins] = await Promise.all([
        listSigningKeys(db),
        countSecurityEvents(db, day),
        countSecurityEvents(db, month),
        activeAdminKeys(db),
        peopleWithoutTotp(db),
        activeAdmins(db),
      ]);
      const count = (counts: typeof recent, type: string) => counts.get(type) ?? 0;
      return {
        signingKeys: keys.map((k) => keyInfo(k, now)),
        commandExpiry: durationFromMs(deps.settings.commandExpirySeconds * 1000),
        accessTokenTtl: durationFromMs(config.accessTokenTtlSeconds * 1000),
        refreshTokenTtl: durationFromMs(config.refreshTokenSlidingSeconds * 1000),
        refreshTokenMaxAge: durationFromMs(config.refreshTokenAbsoluteSeconds * 1000),
        eventCounts: EVENT_TYPES.map((type) => ({ type, last24h: count(recent, type), last30d: count(older, type) })),
        adminKeyActive: adminKeys > 0,
        usersWithoutTotp: withoutTotp,
        admins,
      };
    },

    async listSecurityEvents(req) {
      const before = idPageToken(req.pageToken);
      const type = text("type", req.type, { max: 64 });
      if (type && !EVENT_TYPES.includes(type)) throw invalid(`type "${type}" is not an event type (${EVENT_TYPES.join(", ")})`);
      if (req.severity && !["info", "warning", "critical"].includes(req.severity)) throw invalid("severity must be info, warning or critical");
      const size = pageSize(req.pageSize);
      const { rows, next } = await listSecurityEvents(db, { type, severity: req.severity }, size, before);
      return {
        events: rows.map((e) =>
          create(SecurityEventSchema, {
            id: e.id.toString(),
            time: timestampFromDate(e.createdAt),
            type: e.type,
            severity: e.severity,
            message: e.message,
            agentId: e.agentId ?? "",
            machineId: e.machineId ?? "",
            remoteAddr: e.remoteAddr ?? "",
            detailJson: JSON.stringify(e.detail ?? {}),
          }),
        ),
        nextPageToken: nextIdPageToken(next),
      };
    },

    async rotateSigningKey(req, ctx) {
      const grace = req.grace ? Number(req.grace.seconds) : 7 * 86_400;
      if (grace < 3600 || grace > 90 * 86_400) throw invalid("grace must be from 1 hour to 90 days");
      const { active, previousKeyId } = await rotateSigningKey(db, deps.masterKey, grace, (tx, done) =>
        audit(tx, ctx, { target: "signing-keys", before: { activeKeyId: done.previousKeyId }, after: { activeKeyId: done.activeKeyId, graceSeconds: grace } }),
      );
      await reloadSigningKeys(db, deps.masterKey, deps.signer);
      const now = Date.now();
      const rows = await listSigningKeys(db, [active.keyId, ...(previousKeyId ? [previousKeyId] : [])]);
      const info = (id: string | undefined) => {
        const row = rows.find((r) => r.id === id);
        return row ? keyInfo(row, now) : undefined;
      };
      return { activeKey: info(active.keyId), previousKey: info(previousKeyId) };
    },

    // The admin key itself may call this: whoever holds it can already make an admin person,
    // so refusing it protects nothing. What matters is that someone can still sign in as an
    // admin afterwards, which the store checks.
    async revokeAdminKey(_req, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      const by = { name: principal.name, kind: principal.kind, remoteAddr: ctx.values.get(kRemoteAddr) };
      const { revokedAt } = await revokeBootstrapAdminKey(db, by, (tx, done) =>
        audit(tx, ctx, { target: "admin-key", before: { active: true, keyIds: done.keyIds }, after: { active: false, revokeTime: done.revokedAt.toISOString() } }),
      ).catch((err: unknown) => {
        if (!(err instanceof AdminKeyRevokeRefused)) throw err;
        throw new ConnectError(
          err.reason === "already_revoked"
            ? "the admin key is already revoked"
            : "no enabled admin person exists: revoking the admin key now would lock everyone out; set up or create an admin user first, then revoke it",
          Code.FailedPrecondition,
        );
      });
      // Cached lookups would let the key through for a few more seconds.
      deps.principals.forget();
      return { revokeTime: timestampFromDate(revokedAt) };
    },
  };
}
