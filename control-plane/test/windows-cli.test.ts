import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// redflag windows create|list|update|delete|preview, in process against a real control plane.

let cp: TestControlPlane;
let web: TestAgent;
let config: string;
const admin = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });

// A command line as a shell would split it (double quotes only, as the help text uses them).
const words = (line: string) => [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);

beforeAll(async () => {
  cp = await startTestControlPlane();
  config = await mkdtemp(path.join(os.tmpdir(), "rf-cli-"));
  web = await registerTestAgent(cp, await newRegistrationToken(cp));
  await cp.admin.fleet.setAgentLabels({ agentId: web.agentId, group: "db", tags: [] });
});
afterAll(async () => {
  await cp?.close();
  await rm(config, { recursive: true, force: true });
});

describe("redflag windows", () => {
  it("runs the examples of its help as printed", async () => {
    const help = await runInProcess(["windows", "create", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--rrule <rule>\s+RFC 5545 RRULE/);
    const examples = help.stdout.split("\n").filter((l) => l.trim().startsWith("redflag windows "));
    expect(examples).toHaveLength(4);
    for (const line of examples) {
      const run = await admin(words(line.trim()).slice(1));
      expect(run.code, `${line}\n${run.stderr}`).toBe(0);
    }
    const list = await admin(["windows", "list"]);
    expect(list.stdout).toMatch(/^NAME\s+KIND\s+RRULE\s+START\s+DURATION\s+TIME ZONE\s+APPLIES TO\s+STATE\s+NEXT \(UTC\)\s+ID$/m);
    expect(list.stdout).toMatch(/^db saturdays\s+maintenance\s+FREQ=WEEKLY;BYDAY=SA\s+2026-01-03T22:00:00\s+4h\s+Europe\/Berlin\s+group:db\s+(closed|open until \S+)\s+\S+\s+\S+$/m);
    expect(list.stdout).toMatch(/^web patch nights\s+maintenance \(auto-install\)\s+FREQ=WEEKLY;BYDAY=TU,TH\s+2026-01-06T01:00:00\s+3h\s+UTC\s+group:web\s/m);
    expect(list.stdout).toMatch(/^year-end freeze\s+blackout\s+FREQ=YEARLY\s+2026-12-20T00:00:00\s+16d\s+America\/New_York\s+all agents\s/m);
    expect(await runInProcess(["windows", "--help"])).toMatchObject({ code: 0, stdout: expect.stringMatching(/create \[options\]\s+add a window/) });
  });

  it("previews a saved window and an unsaved definition across the DST change, and says what is wrong", async () => {
    const saved = await admin(["windows", "preview", "db saturdays", "--count", "2", "--after", "2026-03-25T00:00Z"]);
    expect(saved).toEqual({
      code: 0,
      stdout:
        "START (LOCAL)              END (LOCAL)                START (UTC)\n" +
        "2026-03-28T22:00:00+01:00  2026-03-29T03:00:00+02:00  2026-03-28T21:00Z\n" +
        "2026-04-04T22:00:00+02:00  2026-04-05T02:00:00+02:00  2026-04-04T20:00Z\n",
      stderr: "",
    });
    const unsaved = await admin(["--json", "windows", "preview", "--rrule", "FREQ=DAILY", "--start", "2026-10-30T01:30", "--duration", "1h", "--time-zone", "America/New_York", "--count", "3", "--after", "2026-10-31T00:00Z"]);
    expect(JSON.parse(unsaved.stdout).occurrences.map((o: { localStart: string }) => o.localStart)).toEqual([
      "2026-10-31T01:30:00-04:00",
      "2026-11-01T01:30:00-04:00",
      "2026-11-02T01:30:00-05:00",
    ]);
    expect(await admin(["windows", "preview"])).toEqual({ code: 1, stdout: "", stderr: "redflag: name a saved window, or give all of --rrule, --start, --duration and --time-zone\n" });
    const bad = await admin(["windows", "preview", "--rrule", "FREQ=HOURLY", "--start", "2026-01-01T00:00", "--duration", "1h", "--time-zone", "UTC"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^redflag: InvalidArgument: rrule FREQ=HOURLY is not accepted/);
    const after = await admin(["windows", "preview", "db saturdays", "--after", "yesterday"]);
    expect(after.code).toBe(2);
    expect(after.stderr).toMatch(/--after <time>' argument 'yesterday' is invalid. must be a time with its offset/);
  });

  it("updates, lists per agent and deletes by name; a bad change changes nothing", async () => {
    const created = await admin(["windows", "create", "--name", "web only", "--agent", web.registration.agentId, "--rrule", "FREQ=DAILY", "--start", "2026-01-01T03:00", "--duration", "30m", "--time-zone", "UTC"]);
    expect(created.stdout).toMatch(/^created maintenance window "web only": \S+; next opens \S+\n$/);
    const bad = await admin(["windows", "update", "web only", "--time-zone", "Nowhere/Land"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/time_zone "Nowhere\/Land" is not an IANA time zone/);
    expect((await admin(["windows", "update", "web only", "--kind", "blackout", "--disable", "--name", "web quiet"])).stdout).toMatch(/^updated window "web quiet": \S+\n$/);
    const forAgent = await admin(["windows", "list", "--agent", web.agentId]);
    expect(forAgent.stdout).toMatch(/^web quiet\s+blackout\s+FREQ=DAILY\s+2026-01-01T03:00:00\s+30m\s+UTC\s+agent:\S+\s+disabled\s+\S+$/m);
    expect(forAgent.stdout).toMatch(/^db saturdays\s/m);
    // Auto-install is for maintenance windows: refused on this blackout, changing nothing; then off again.
    const blackout = await admin(["windows", "update", "web quiet", "--auto-install"]);
    expect(blackout).toEqual({ code: 1, stdout: "", stderr: "redflag: InvalidArgument: window.auto_install is for maintenance windows: a blackout window installs nothing\n" });
    expect((await admin(["windows", "update", "web patch nights", "--no-auto-install"])).code).toBe(0);
    expect((await admin(["windows", "list"])).stdout).toMatch(/^web patch nights\s+maintenance\s+FREQ/m);
    expect(await admin(["windows", "delete", "web quiet"])).toEqual({ code: 0, stdout: 'window "web quiet" deleted\n', stderr: "" });
    expect(await admin(["windows", "delete", "web quiet"])).toEqual({ code: 1, stdout: "", stderr: "redflag: no window is named web quiet; `redflag windows list` shows them\n" });
  });
});
