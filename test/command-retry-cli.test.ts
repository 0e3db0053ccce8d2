import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent } from "../control-plane/test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

// A CreateCommand whose answer is lost on the way back (the control plane queued the command,
// the connection broke before the client heard so): the CLI tries again with the same
// idempotency key, and the control plane answers with the command it already queued.
describe("redflag commands queue after a lost answer", () => {
  let cp: TestControlPlane;
  let proxy: Server;
  let proxyUrl: string;
  let dropped = 0;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    // Forwards everything; the first CreateCommand reaches the control plane, then its answer is thrown away.
    proxy = createServer((req, res) => {
      const upstream = request(`${cp.url}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        const chunks: Buffer[] = [];
        answer.on("data", (c: Buffer) => chunks.push(c));
        answer.on("end", () => {
          if (req.url?.endsWith("/CreateCommand") && dropped === 0) {
            dropped++;
            req.socket.destroy();
            return;
          }
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.end(Buffer.concat(chunks));
        });
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    proxy?.close();
    await cp?.close();
  });

  it("retries with the same idempotency key and queues the command once", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const res = await run(["control-plane/src/cli/main.ts", "--server", proxyUrl, "--api-key", cp.adminKey, "commands", "queue", "--agent", agent.agentId, "--type", "collect_specs"]);
    expect(res.code, res.stderr).toBe(0);
    expect(dropped).toBe(1);
    expect(res.stderr).toMatch(/^redflag: no answer \((Unavailable|Unknown|DeadlineExceeded|Aborted): .+\); trying again with the same idempotency key\n$/);
    const rows = await cp.app.db.prisma.command.findMany({ where: { agentId: agent.agentId } });
    expect(rows).toHaveLength(1);
    expect(res.stdout).toBe(`${rows[0]!.id}\n`);
    const shown = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, "commands", "get", rows[0]!.id]);
    expect(shown.stdout).toContain("\ndelivered: not yet\n");

    // A script that runs the whole command again passes its own key and still gets one command.
    const again = ["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, "commands", "queue", "--agent", agent.agentId, "--type", "reboot", "--idempotency-key", "nightly-reboot-2026-12-05"];
    const one = await run(again);
    const two = await run(again);
    expect([one.code, two.code]).toEqual([0, 0]);
    expect(two.stdout).toBe(one.stdout);
    expect(await cp.app.db.prisma.command.count({ where: { agentId: agent.agentId } })).toBe(2);
  });
});
