import { create, fromBinary } from "@bufbuild/protobuf";
import { CommandOutcome, CommandSchema, CommandType, PackageRefSchema, PackageVersionsSchema, RollbackVersionSchema } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// redflag commands versions: asks an agent which versions it can roll back to, waits for the
// answer, and prints a rollback command that works as printed. In process, against a real
// control plane, with the agent's side played over the agent API.

let cp: TestControlPlane;
let web: TestAgent;
let config: string;
const admin = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });
const words = (line: string) => [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);

beforeAll(async () => {
  cp = await startTestControlPlane();
  config = await mkdtemp(path.join(os.tmpdir(), "rf-cli-versions-"));
  web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-7" });
});
afterAll(async () => {
  await cp?.close();
  await rm(config, { recursive: true, force: true });
});

// Plays the agent: takes the next command once it is queued and answers it with `answer`.
async function answerNext(answer: (command: ReturnType<typeof fromBinary<typeof CommandSchema>>) => Parameters<TestAgent["client"]["reportResults"]>[0]["results"]) {
  for (let i = 0; i < 100; i++) {
    const pending = await cp.admin.commands.listCommands({ agentId: web.agentId, state: CommandState.PENDING, pageSize: 10 });
    if (pending.commands.length > 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const polled = await web.client.pollCommands({ nonce: nonce() });
  expect(polled.commands).toHaveLength(1);
  const command = fromBinary(CommandSchema, polled.commands[0]!.command);
  await web.client.reportResults({ results: answer(command) });
  return command;
}

describe("redflag commands versions", () => {
  it("prints each package's versions and a rollback command that queues as printed", async () => {
    const asking = admin(["commands", "versions", "web-7", "apt:curl", "snap:firefox", "brew:wget", "--wait", "20s"]);
    const command = await answerNext((c) => {
      expect(c.action.case).toBe("listPackageVersions");
      const asked = c.action.case === "listPackageVersions" ? c.action.value.packages.map((p) => `${p.source}:${p.name}`) : [];
      expect(asked).toEqual(["apt:curl", "snap:firefox", "brew:wget"]);
      const pkg = (source: string, name: string) => create(PackageRefSchema, { source, name });
      const v = (version: string, description: string) => create(RollbackVersionSchema, { version, description });
      return [
        {
          commandId: c.id,
          outcome: CommandOutcome.SUCCEEDED,
          message: "curl: 2 earlier versions",
          sequence: c.sequence,
          detail: {
            case: "listPackageVersions",
            value: {
              packages: [
                create(PackageVersionsSchema, { package: pkg("apt", "curl"), installedVersion: "7.88.1-10+deb12u14", rollbackSupported: true, versions: [v("7.88.1-10+deb12u5", "from bookworm-security"), v("1:7.74.0-1.3", "from bullseye")] }),
                create(PackageVersionsSchema, { package: pkg("snap", "firefox"), installedVersion: "131.0.3-1", rollbackSupported: true, versions: [v("5091", "version 130.0-2 (revision 5091)")] }),
                create(PackageVersionsSchema, { package: pkg("brew", "wget"), rollbackSupported: false, reason: "Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one" }),
              ],
            },
          },
        },
      ];
    });
    const run = await asking;
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("apt:curl  installed 7.88.1-10+deb12u14\n");
    expect(run.stdout).toMatch(/^ {2}VERSION\s+WHERE$/m);
    expect(run.stdout).toMatch(/^ {2}7\.88\.1-10\+deb12u5\s+from bookworm-security$/m);
    expect(run.stdout).toContain("brew:wget\n  nothing to go back to: Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one\n");
    const lines = run.stdout.split("\n").filter((l) => l.trim().startsWith("roll back with: ")).map((l) => l.trim().slice("roll back with: ".length));
    expect(lines).toEqual([
      `redflag commands queue --agent ${web.agentId} --type rollback_update --package apt:curl --to-version 7.88.1-10+deb12u5`,
      `redflag commands queue --agent ${web.agentId} --type rollback_update --package snap:firefox --to-version 5091`,
    ]);

    // Pasted as printed, each queues the rollback it names.
    for (const line of lines) {
      const queued = await admin(words(line).slice(1));
      expect(queued.code, queued.stderr).toBe(0);
    }
    const rollbacks = (await cp.admin.commands.listCommands({ agentId: web.agentId, state: CommandState.PENDING, pageSize: 10 })).commands.filter((c) => c.type === CommandType.ROLLBACK_UPDATE);
    expect(rollbacks).toHaveLength(2);
    const [firstRollback] = (await web.client.pollCommands({ nonce: nonce() })).commands.map((s) => fromBinary(CommandSchema, s.command));
    expect(firstRollback?.action).toMatchObject({ case: "rollbackUpdate", value: { package: { source: "apt", name: "curl" }, targetVersion: "7.88.1-10+deb12u5" } });

    // The listing is kept as the command's result: `commands get` prints it too.
    const got = await admin(["commands", "get", command.id]);
    expect(got.stdout).toMatch(/^type:\s+list_package_versions$/m);
    expect(got.stdout).toContain("roll back with: redflag commands queue");
  });

  it("refuses a version in the question and an agent that is not there, queueing nothing", async () => {
    const before = (await cp.admin.commands.listCommands({ agentId: web.agentId, pageSize: 500 })).commands.length;
    const pinned = await admin(["commands", "versions", "web-7", "apt:curl=7.88.1-10"]);
    expect(pinned).toMatchObject({ code: 1, stderr: "redflag: apt:curl=7.88.1-10: name the package only (source:name); the answer lists every version it can go back to\n" });
    const tooMany = await admin(["commands", "versions", "web-7", ...Array.from({ length: 51 }, (_, i) => `apt:p${i}`)]);
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toMatch(/list_package_versions\.packages names 51 packages; at most 50 per command/);
    expect((await cp.admin.commands.listCommands({ agentId: web.agentId, pageSize: 500 })).commands.length).toBe(before);
  });

  it("says the agent failed and exits 1 when the answer is a failure", async () => {
    const asking = admin(["commands", "versions", web.agentId, "dnf:curl", "--wait", "20s"]);
    await answerNext((c) => [{ commandId: c.id, outcome: CommandOutcome.FAILED, message: "curl: dnf list --showduplicates failed (exit status 1)", sequence: c.sequence }]);
    const run = await asking;
    expect(run).toMatchObject({ code: 1, stdout: "failed: curl: dnf list --showduplicates failed (exit status 1)\n" });
  });
});
