import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";

// The console talks to the control plane it was served from (one origin): the session is the
// HttpOnly cookie Login and Setup set, sent with every call.
const transport = createConnectTransport({ baseUrl: globalThis.location?.origin ?? "http://127.0.0.1:8080", useBinaryFormat: false });

export const api = {
  auth: createClient(AuthService, transport),
  fleet: createClient(FleetService, transport),
  tokens: createClient(TokenService, transport),
  updates: createClient(UpdateService, transport),
  commands: createClient(CommandService, transport),
};

// A message for people: the server's own words, or what went wrong on the way.
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Unavailable || e.code === Code.Unknown) return "The control plane cannot be reached right now; retrying may help.";
  return e.rawMessage;
}

export const isUnauthenticated = (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated;
