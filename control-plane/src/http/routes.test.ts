import { MethodOptions_IdempotencyLevel as Idempotency } from "@bufbuild/protobuf/wkt";
import { createConnectRouter } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { policyTable } from "../auth/policy.ts";
import { createRoutes, RPC_SERVICES, type RouteDeps } from "./routes.ts";

describe("routes", () => {
  it("serves every method of exactly the services RPC_SERVICES lists", () => {
    // Building the routes only wires handlers; nothing is called, so any value stands in for the deps.
    const stand: unknown = new Proxy(function () {}, { get: (_t, key) => (key === "then" ? undefined : stand), apply: () => stand });
    const router = createConnectRouter();
    createRoutes(stand as RouteDeps)(router);
    const served = router.handlers.map((h) => h.requestPath).sort();
    const listed = RPC_SERVICES.flatMap((s) => s.methods.map((m) => `/${s.typeName}/${m.name}`)).sort();
    expect(served).toEqual(listed);
  });

  it("marks exactly the reads free of side effects (Connect GET), never a change", () => {
    const marked = RPC_SERVICES.filter((s) => s.typeName.startsWith("redflag.")).flatMap((s) => s.methods.filter((m) => m.idempotency === Idempotency.NO_SIDE_EFFECTS).map((m) => m.name));
    const reads = RPC_SERVICES.filter((s) => s.typeName.startsWith("redflag.")).flatMap((s) =>
      s.methods.filter((m) => m.methodKind === "unary" && /^(List|Get|Preview)[A-Z]|^WhoAmI$/.test(m.name)).map((m) => m.name),
    );
    expect(marked.sort()).toEqual(reads.sort());
  });

  it("has a line in the policy table for every RPC it serves, and none for anything else", () => {
    const rpcs = RPC_SERVICES.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    expect([...policyTable().keys()].sort()).toEqual(rpcs.sort());
  });
});
