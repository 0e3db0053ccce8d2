import { createContextKey } from "@connectrpc/connect";

export interface AgentIdentity {
  readonly agentId: string;
  readonly machineId: string;
}

export interface AdminIdentity {
  readonly keyId: string;
  readonly name: string;
}

// Set by the auth interceptor from the verified credential; handlers read identity only here.
export const kAgent = createContextKey<AgentIdentity | undefined>(undefined, { description: "verified agent" });
export const kAdmin = createContextKey<AdminIdentity | undefined>(undefined, { description: "verified admin" });
export const kRemoteAddr = createContextKey<string>("", { description: "peer address" });
