import { createContextKey } from "@connectrpc/connect";
import type { RoleName } from "@redflag/common/roles";

export interface AgentIdentity {
  readonly agentId: string;
  readonly machineId: string;
}

// A person (through a session or a personal API token) or the bootstrap admin key.
export interface Principal {
  readonly kind: "session" | "api_token" | "admin_key";
  // The effective role: an API token's scope can lower its owner's role, never raise it.
  readonly role: RoleName;
  // Username, or the key's name: what audit entries and "created by" show.
  readonly name: string;
  readonly userId: string | undefined;
  // The session's or key's ID.
  readonly credentialId: string;
}

// Set by the auth interceptor from the verified credential; handlers read identity only here.
export const kAgent = createContextKey<AgentIdentity | undefined>(undefined, { description: "verified agent" });
export const kPrincipal = createContextKey<Principal | undefined>(undefined, { description: "verified person or key" });
export const kRemoteAddr = createContextKey<string>("", { description: "peer address" });
export const kUserAgent = createContextKey<string>("", { description: "HTTP user agent" });
