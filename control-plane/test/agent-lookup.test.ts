import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair } from "../src/signing/keys.ts";
import { newRegistrationToken, randomMachineId, registerRequest } from "./support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { availableBackends, freshDatabase, type Backend } from "./support/database.ts";

async function expectCode(promise: Promise<unknown>, code: Code, message: RegExp) {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code], (err as ConnectError).rawMessage).toBe(Code[code]);
  expect((err as ConnectError).rawMessage).toMatch(message);
}

// ListAgents by exact hostname (how the CLI takes a hostname for an agent ID) and by a batch of
// IDs (how its lists name the agents they show), on each database.
describe.each(availableBackends)("ListAgents by hostname and by IDs on %s", (backend: Backend) => {
  let cp: TestControlPlane;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    cp = await startTestControlPlane({}, { db: await freshDatabase({ backend }), port: 0 });
    const token = await newRegistrationToken(cp, 10);
    // Hostnames that a pattern match would confuse: "_" and "%" are LIKE wildcards.
    for (const hostname of ["web-1", "WEB-1", "web-10", "db_1", "dbx1", "50%", "500"]) {
      ids[hostname] = (await cp.agentClient().register(registerRequest(token, randomMachineId(), generateKeyPair(), hostname))).agentId;
    }
  });
  afterAll(async () => {
    await cp?.close();
  });

  const byHostname = async (hostname: string) => (await cp.admin.fleet.listAgents({ hostname })).agents.map((a) => a.hostname).sort();

  it("matches the whole hostname, ignoring case, and nothing that only looks like it", async () => {
    expect(await byHostname("web-1")).toEqual(["WEB-1", "web-1"]);
    expect(await byHostname("Web-1")).toEqual(["WEB-1", "web-1"]);
    expect(await byHostname(" web-10 ")).toEqual(["web-10"]);
    expect(await byHostname("web")).toEqual([]);
    expect(await byHostname("db_1")).toEqual(["db_1"]);
    expect(await byHostname("50%")).toEqual(["50%"]);
    expect(await byHostname("5%")).toEqual([]);
    expect(await byHostname("%")).toEqual([]);
    expect(await byHostname("db\\_1")).toEqual([]);
    // With the other filters, and paged like any list.
    const page = await cp.admin.fleet.listAgents({ hostname: "web-1", pageSize: 1 });
    expect(page.agents).toHaveLength(1);
    expect(page.nextPageToken).not.toBe("");
  });

  it("returns the agents of a batch of IDs in one call, ignoring IDs no agent has", async () => {
    const wanted = [ids["web-1"]!, ids["db_1"]!, "00000000-0000-4000-8000-000000000000"];
    const res = await cp.admin.fleet.listAgents({ agentIds: wanted, pageSize: 500 });
    expect(res.agents.map((a) => a.hostname).sort()).toEqual(["db_1", "web-1"]);
  });

  it("refuses a hostname or a batch out of bounds", async () => {
    await expectCode(cp.admin.fleet.listAgents({ hostname: "h".repeat(254) }), Code.InvalidArgument, /hostname is longer than 253 characters/);
    await expectCode(cp.admin.fleet.listAgents({ hostname: "web\n1" }), Code.InvalidArgument, /hostname contains control characters/);
    await expectCode(cp.admin.fleet.listAgents({ hostname: "   " }), Code.InvalidArgument, /hostname is required/);
    await expectCode(cp.admin.fleet.listAgents({ agentIds: ["web-1"] }), Code.InvalidArgument, /agent_ids\[0\] must be a UUID/);
    const many = Array.from({ length: 501 }, () => ids["web-1"]!);
    await expectCode(cp.admin.fleet.listAgents({ agentIds: many }), Code.InvalidArgument, /agent_ids holds at most 500 IDs/);
  });
});
