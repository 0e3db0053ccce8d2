import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { toJson } from "@bufbuild/protobuf";
import { RegistrationTokenSchema, TokenService } from "@redflag/gen/token_service_pb";
import { audit, callerName } from "./audit.ts";
import { issueRegistrationToken, removeRegistrationToken, withdrawRegistrationToken } from "../domain/registration-tokens.ts";
import { listRegistrationTokens } from "../store/registration-tokens.ts";
import type { Prisma } from "../store/types.ts";
import { activeKeyFingerprint, type CommandSigner } from "../signing/signer.ts";
import { registrationTokenToProto } from "./convert.ts";
import { agentServerUrl, installCommands, serverUrlWarning } from "../domain/enrolment.ts";
import { invalid, nextPageToken, pageSize, pageToken, text, uuid } from "./validate.ts";

const MAX_SEATS = 100_000;
const MAX_TTL_SECONDS = 5 * 365 * 86_400;

export function createTokenService(
  db: Prisma,
  publicUrl: string | undefined,
  signer: Pick<CommandSigner, "activeKeyId" | "trustedKeys">,
): ServiceImpl<typeof TokenService> {
  return {
    async createRegistrationToken(req, ctx: HandlerContext) {
      if (req.seats < 1 || req.seats > MAX_SEATS) throw invalid(`seats must be from 1 to ${MAX_SEATS}`);
      let ttlSeconds: number | undefined;
      if (req.ttl) {
        ttlSeconds = Number(req.ttl.seconds) + req.ttl.nanos / 1e9;
        if (!(ttlSeconds >= 60 && ttlSeconds <= MAX_TTL_SECONDS)) throw invalid("ttl must be from 1 minute to 5 years");
      }
      const note = text("note", req.note, { max: 200 });
      const now = new Date();
      const { token, secret } = await issueRegistrationToken(db, { seats: req.seats, ttlSeconds, note, createdBy: callerName(ctx), now }, (tx, token) =>
        audit(tx, ctx, { target: `registration_token:${token.id}`, after: toJson(RegistrationTokenSchema, registrationTokenToProto(token, now)) }),
      );
      const signingKeyFingerprint = activeKeyFingerprint(signer);
      const serverUrl = agentServerUrl(ctx, publicUrl);
      return {
        token: registrationTokenToProto(token, now),
        secret,
        installCommands: installCommands(serverUrl, secret, signingKeyFingerprint),
        signingKeyFingerprint,
        serverUrl,
        serverUrlWarning: serverUrlWarning(serverUrl),
      };
    },

    async listRegistrationTokens(req) {
      const { rows, next } = await listRegistrationTokens(db, pageSize(req.pageSize), pageToken(req.pageToken));
      const now = new Date();
      return { tokens: rows.map((r) => registrationTokenToProto(r, now)), nextPageToken: nextPageToken(next) };
    },

    async deleteRegistrationToken(req, ctx) {
      const id = uuid("id", req.id);
      const now = new Date();
      await removeRegistrationToken(db, id, now, (tx, row) => audit(tx, ctx, { target: `registration_token:${id}`, before: toJson(RegistrationTokenSchema, registrationTokenToProto(row, now)) }));
      return {};
    },

    async revokeRegistrationToken(req, ctx) {
      const now = new Date();
      const row = await withdrawRegistrationToken(db, uuid("id", req.id), now, (tx, row) =>
        audit(tx, ctx, { target: `registration_token:${row.id}`, after: toJson(RegistrationTokenSchema, registrationTokenToProto(row, now)) }),
      );
      return { token: registrationTokenToProto(row, now) };
    },
  };
}
