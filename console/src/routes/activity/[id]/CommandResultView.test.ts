import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, CommandType } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { screen } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { command, signIn, WEB } from "#lib/testing/fixtures.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import CommandResultView from "./CommandResultView.svelte";

const ID = "11111111-1111-4111-8111-111111111111";
const none = () => undefined;
const inHours = (h: number) => timestampFromDate(new Date(Date.now() + h * 3_600_000));

describe("a command's result", () => {
  beforeEach(() => signIn(Role.OPERATOR));

  it("says what is happening before the agent reports", () => {
    renderWithApi(CommandResultView, none, { command: command({ id: ID, agentId: WEB, type: CommandType.SCAN_UPDATES, state: CommandState.SENT }) });
    expect(screen.getByTestId("no-result").textContent).toBe("The agent has it and is running it; the result appears here when it reports.");
  });

  it("explains a command the agent refused", () => {
    renderWithApi(CommandResultView, none, {
      command: command({ id: ID, agentId: WEB, type: CommandType.REBOOT, state: CommandState.REJECTED, result: { outcome: CommandOutcome.REJECTED, message: "signature does not verify with any pinned key" } }),
    });
    expect(screen.getByTestId("result-message").textContent).toBe("Refused by the agent: signature does not verify with any pinned key");
    expect(screen.getByText(/never ran it/)).toBeTruthy();
  });

  it("shows when a reboot is scheduled and until when a heartbeat runs", () => {
    const { unmount } = renderWithApi(CommandResultView, none, {
      command: command({ id: ID, agentId: WEB, type: CommandType.REBOOT, state: CommandState.SUCCEEDED, result: { outcome: CommandOutcome.SUCCEEDED, detail: { case: "reboot", value: { scheduled: true, rebootTime: inHours(1), wasRequired: true } } } }),
    });
    expect(screen.getByTestId("reboot-time").textContent).toContain("scheduled for");
    expect(screen.getByTestId("reboot-time").textContent).toContain("(in 1 h)");
    expect(screen.getByText("yes, the host reported it needed a reboot")).toBeTruthy();
    unmount();

    renderWithApi(CommandResultView, none, {
      command: command({ id: ID, agentId: WEB, type: CommandType.ENABLE_HEARTBEAT, state: CommandState.SUCCEEDED, result: { outcome: CommandOutcome.SUCCEEDED, detail: { case: "heartbeat", value: { until: inHours(2), intervalSeconds: 5 } } } }),
    });
    expect(screen.getByTestId("heartbeat-until").textContent).toMatch(/Polling every 5 s until .+ \(in 2 h\)\./);
  });

  it("says where the updates of a scan sent in parts are, and how many it found", () => {
    renderWithApi(CommandResultView, none, {
      command: command({
        id: ID,
        agentId: WEB,
        type: CommandType.SCAN_UPDATES,
        state: CommandState.SUCCEEDED,
        result: {
          outcome: CommandOutcome.SUCCEEDED,
          message: "found 5000 update(s), 0 security",
          detail: { case: "scanUpdates", value: { updateParts: 5, subsystems: [{ subsystem: "apt", state: 1, updateCount: 5000 }] } },
        },
      }),
    });
    expect(screen.getByText("Updates found").textContent).toBe("Updates found (5000)");
    // The message is in an older agent's wording; it reads as counted words all the same.
    expect(screen.getByTestId("result-message").textContent).toContain("found 5000 updates, 0 security");
    expect(screen.getByTestId("scan-in-parts").textContent).toBe("Too many to list with the command: the agent sent them in 5 parts. They are the agent's pending updates.");
    expect(screen.queryByText("No pending updates.")).toBeNull();
  });

  it("lists collected specs and disks", () => {
    renderWithApi(CommandResultView, none, {
      command: command({
        id: ID,
        agentId: WEB,
        type: CommandType.COLLECT_SPECS,
        state: CommandState.SUCCEEDED,
        result: {
          outcome: CommandOutcome.SUCCEEDED,
          detail: {
            case: "collectSpecs",
            value: {
              specs: {
                hostname: "web-1",
                os: { name: "Debian GNU/Linux", version: "12 (bookworm)", arch: "x86_64", kernel: "6.1.0-18-amd64" },
                cpuModel: "AMD EPYC 7B13",
                cpuCores: 4,
                memoryTotalBytes: 8n * 1024n ** 3n,
                memoryAvailableBytes: 6n * 1024n ** 3n,
                uptimeSeconds: 90_061n,
                rebootRequired: true,
                rebootRequiredBy: ["linux-image-6.1.0-18-amd64"],
                disks: [{ mountPoint: "/", device: "/dev/sda1", fsType: "ext4", sizeBytes: 100n * 1024n ** 3n, usedBytes: 25n * 1024n ** 3n }],
              },
            },
          },
        },
      }),
    });
    const specs = screen.getByTestId("specs").textContent!.replace(/\s+/g, " ");
    expect(specs).toContain("Debian GNU/Linux 12 (bookworm) · x86_64 · kernel 6.1.0-18-amd64");
    expect(specs).toContain("AMD EPYC 7B13 · 4 cores");
    expect(specs).toContain("6.0 GiB available of 8.0 GiB");
    expect(specs).toContain("1 d 1 h");
    expect(specs).toContain("required by linux-image-6.1.0-18-amd64");
    expect(screen.getByRole("cell", { name: "25.0 GiB (25%)" })).toBeTruthy();
  });

  it("lists the versions each package can go back to, or why there are none", () => {
    renderWithApi(CommandResultView, none, {
      command: command({
        id: ID,
        agentId: WEB,
        type: CommandType.LIST_PACKAGE_VERSIONS,
        state: CommandState.SUCCEEDED,
        result: {
          outcome: CommandOutcome.SUCCEEDED,
          message: "curl: 2 earlier versions",
          detail: {
            case: "listPackageVersions",
            value: {
              packages: [
                { package: { source: "apt", name: "curl" }, installedVersion: "7.88.1-10+deb12u14", rollbackSupported: true, versions: [{ version: "7.88.1-10+deb12u5", description: "from bookworm-security" }, { version: "7.88.1-10" }] },
                { package: { source: "brew", name: "wget" }, rollbackSupported: false, reason: "Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one" },
              ],
            },
          },
        },
      }),
    });
    const rows = screen.getAllByTestId("package-versions").map((r) => [...r.querySelectorAll("td")].map((c) => c.textContent?.replace(/\s+/g, " ").trim()));
    expect(rows).toEqual([
      ["curl", "apt", "7.88.1-10+deb12u14", "7.88.1-10+deb12u5 from bookworm-security7.88.1-10"],
      ["wget", "brew", "—", "Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one"],
    ]);
  });
});
