import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { RegistrationTokenSchema, RegistrationTokenState, TokenService } from "@redflag/gen/token_service_pb";
import { audit, callerName } from "./audit.ts";
import {
  createRegistrationToken,
  listRegistrationTokens,
  revokeRegistrationToken,
} from "../store/registration-tokens.ts";
import type { Prisma } from "../store/types.ts";
import { activeKeyFingerprint, type CommandSigner } from "../signing/signer.ts";
import { registrationTokenToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, pageToken, text, uuid } from "./validate.ts";

const MAX_SEATS = 100_000;
const MAX_TTL_SECONDS = 5 * 365 * 86_400;

// The URL agents should dial: the configured public URL, else what the caller used.
function serverUrl(ctx: HandlerContext, publicUrl: string | undefined): string {
  if (publicUrl) return publicUrl.replace(/\/+$/, "");
  const host = ctx.requestHeader.get("x-forwarded-host") ?? ctx.requestHeader.get("host") ?? "127.0.0.1:8080";
  const proto = ctx.requestHeader.get("x-forwarded-proto") ?? (ctx.url.startsWith("https:") ? "https" : "http");
  return `${proto}://${host}`;
}

// Whether a URL's host is this machine (127.0.0.0/8, ::1, localhost): plain http there never
// crosses a network.
export function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

// What to paste on each platform. The token goes through a file (Linux, macOS) so it never
// shows in the process list; the service definitions ship with the agent packages. Every
// command pins the signing key by its fingerprint, so a man in the middle of the enrolment
// cannot slip in a key of its own; plain http to another machine needs the agent's explicit
// --insecure-http, said in a comment.
export function installCommands(server: string, secret: string, fingerprint: string) {
  const insecure = server.startsWith("http:") && !isLoopbackUrl(server);
  const note = insecure
    ? "# plain http: anyone on the network path can read the token; serve https (REDFLAG_TLS_CERT, REDFLAG_TLS_KEY) to drop --insecure-http\n"
    : "";
  const flags = `--fingerprint ${fingerprint}${insecure ? " --insecure-http" : ""}`;
  const linux = [
    `${note}umask 077; printf '%s' '${secret}' > /root/redflag-token`,
    `sudo redflag-agent register --server ${server} --token-file /root/redflag-token ${flags} && rm /root/redflag-token`,
    "sudo systemctl enable --now redflag-agent",
  ].join("\n");
  const macos = [
    `${note}umask 077; printf '%s' '${secret}' | sudo tee /var/root/redflag-token > /dev/null`,
    `sudo /usr/local/bin/redflag-agent register --server ${server} --token-file /var/root/redflag-token ${flags} && sudo rm /var/root/redflag-token`,
    "sudo launchctl bootstrap system /Library/LaunchDaemons/io.redflag.agent.plist",
  ].join("\n");
  const windows = [
    `${note}& "$env:ProgramFiles\\RedFlag\\redflag-agent.exe" register --server ${server} --token '${secret}' ${flags}`,
    "Start-Service RedFlagAgent",
  ].join("\n");
  return [
    { platform: "linux", command: linux },
    { platform: "macos", command: macos },
    { platform: "windows", command: windows },
  ];
}

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
      const { token, secret } = await createRegistrationToken(db, {
        seats: req.seats,
        ttlSeconds,
        note,
        createdBy: callerName(ctx),
        now,
      });
      const proto = registrationTokenToProto(token, now);
      await audit(db, ctx, { target: `registration_token:${token.id}`, after: toJson(RegistrationTokenSchema, proto) });
      const signingKeyFingerprint = activeKeyFingerprint(signer);
      return {
        token: proto,
        secret,
        installCommands: installCommands(serverUrl(ctx, publicUrl), secret, signingKeyFingerprint),
        signingKeyFingerprint,
      };
    },

    async listRegistrationTokens(req) {
      const { rows, next } = await listRegistrationTokens(db, pageSize(req.pageSize), pageToken(req.pageToken));
      const now = new Date();
      return { tokens: rows.map((r) => registrationTokenToProto(r, now)), nextPageToken: nextPageToken(next) };
    },

    async deleteRegistrationToken(req, ctx) {
      const id = uuid("id", req.id);
      const row = await db.registrationToken.findUnique({ where: { id }, omit: { tokenHash: true } });
      if (!row) throw new ConnectError(`registration token ${id} does not exist`, Code.NotFound);
      const now = new Date();
      const proto = registrationTokenToProto(row, now);
      if (proto.state === RegistrationTokenState.ACTIVE) {
        throw new ConnectError("the token is still active; revoke it first", Code.FailedPrecondition);
      }
      await db.registrationToken.delete({ where: { id } });
      await audit(db, ctx, { target: `registration_token:${id}`, before: toJson(RegistrationTokenSchema, proto) });
      return {};
    },

    async revokeRegistrationToken(req, ctx) {
      const now = new Date();
      const row = await revokeRegistrationToken(db, uuid("id", req.id), now);
      const proto = registrationTokenToProto(row, now);
      await audit(db, ctx, { target: `registration_token:${row.id}`, after: toJson(RegistrationTokenSchema, proto) });
      return { token: proto };
    },
  };
}
