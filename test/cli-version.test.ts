import { describe, expect, it } from "vitest";
import agentPkg from "../agent/package.json" with { type: "json" };
import controlPlanePkg from "../control-plane/package.json" with { type: "json" };
import { run } from "./support/processes.ts";

// `--version` on both command lines, without a server or a registration.
describe("--version", () => {
  it("prints the redflag CLI's version", async () => {
    expect(await run(["control-plane/src/cli/main.ts", "--version"])).toMatchObject({ code: 0, stdout: `${controlPlanePkg.version}\n` });
    expect(await run(["control-plane/src/cli/main.ts", "-V"])).toMatchObject({ code: 0, stdout: `${controlPlanePkg.version}\n` });
    // A command's own --version is still the command's (here it reaches for the server, which is not there).
    const upgrade = await run(["control-plane/src/cli/main.ts", "--server", "http://127.0.0.1:1", "--api-key", "x", "agents", "upgrade", "abc", "--version", "1.2.3"]);
    expect(upgrade.code).toBe(1);
    expect(upgrade.stderr).toMatch(/cannot reach the control plane at http:\/\/127\.0\.0\.1:1/);
  });

  it("prints the agent's version", async () => {
    expect(await run(["agent/src/main.ts", "--version"])).toMatchObject({ code: 0, stdout: `${agentPkg.version}\n` });
  });
});
