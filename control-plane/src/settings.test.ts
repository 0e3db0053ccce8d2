import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.ts";
import { createSettings, redeliveryWindow, SETTINGS } from "./settings.ts";
import type { StoredSetting } from "./store/settings.ts";
import type { Prisma } from "./store/types.ts";

// A settings table the test fills; counts its reads.
function table(rows: StoredSetting[] = []) {
  const state = { rows, reads: 0 };
  const db = {
    setting: {
      findMany: async () => {
        state.reads++;
        return state.rows;
      },
    },
  } as unknown as Prisma;
  return { db, state };
}
const row = (key: string, value: unknown): StoredSetting => ({ key, value, updatedBy: "admin.key", updatedAt: new Date(0) });

describe("Settings", () => {
  it("gives every setting as a typed property: the environment's default until a value is stored", async () => {
    const { db, state } = table();
    const settings = createSettings(db, loadConfig({ REDFLAG_COMMAND_EXPIRY: "15m", REDFLAG_MAX_DELIVERIES: "3" }, "/srv"), 3_600_000);
    await settings.load();
    expect(settings).toMatchObject({ commandExpirySeconds: 900, maxDeliveries: 3, pollIntervalSeconds: 60, minimumAgentVersion: "", retentionAuditSeconds: 400 * 86_400 });

    state.rows = [row("command_expiry", "20m"), row("minimum_agent_version", "1.2.3"), row("max_deliveries", 7), row("poll_interval", "not a duration")];
    await settings.load();
    // A stored value wins; one that does not pass its definition (written around the server) is ignored.
    expect(settings).toMatchObject({ commandExpirySeconds: 1200, minimumAgentVersion: "1.2.3", maxDeliveries: 7, pollIntervalSeconds: 60 });
    expect(settings.all().find((s) => s.def.key === "command_expiry")).toMatchObject({ value: "20m", defaultValue: "15m", isDefault: false, updatedBy: "admin.key" });
    expect(redeliveryWindow(settings, new Date(10_000_000))).toEqual({ sentBefore: new Date(10_000_000 - 300_000), sentAfter: new Date(10_000_000 - 7_200_000), maxDeliveries: 7 });
  });

  it("has one property per definition, and no other", () => {
    const settings = createSettings(table().db, loadConfig({}, "/srv"), Infinity);
    expect(Object.keys(settings).filter((k) => !["load", "all", "onChange"].includes(k)).sort()).toEqual(SETTINGS.map((s) => s.property).sort());
    expect(new Set(SETTINGS.map((s) => s.key)).size).toBe(SETTINGS.length);
  });

  it("reloads in the background once refreshMs has passed (another replica's change), and tells listeners of a change", async () => {
    const { db, state } = table();
    const settings = createSettings(db, loadConfig({}, "/srv"), 0);
    let changes = 0;
    settings.onChange(() => changes++);
    await settings.load();
    expect(changes).toBe(0);
    state.rows = [row("poll_interval", "2m")];
    await new Promise((r) => setTimeout(r, 2));
    // This read answers from what was loaded, and starts the reload.
    expect(settings.pollIntervalSeconds).toBe(60);
    await new Promise((r) => setTimeout(r, 2));
    expect(settings.pollIntervalSeconds).toBe(120);
    expect(changes).toBe(1);
    expect(state.reads).toBeGreaterThanOrEqual(2);
  });
});
