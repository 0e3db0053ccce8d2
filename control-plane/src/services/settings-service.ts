import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { SettingChangeSchema, SettingSchema, SettingsService } from "@redflag/gen/settings_service_pb";
import { formatDuration } from "@redflag/common/config-values";
import { normalise, SETTINGS, type Settings, type SettingValue } from "../settings.ts";
import { listSettingChanges, writeSettings } from "../store/settings.ts";
import type { Prisma } from "../store/types.ts";
import { audit, callerName } from "./audit.ts";
import { invalid, pageSize, text } from "./validate.ts";

const bound = (type: string, n: number | undefined) => (n === undefined ? "" : type === "duration" ? formatDuration(n) : String(n));

function settingToProto(s: SettingValue) {
  return create(SettingSchema, {
    key: s.def.key,
    value: s.value,
    defaultValue: s.defaultValue,
    isDefault: s.isDefault,
    type: s.def.type,
    description: s.def.description,
    min: bound(s.def.type, s.def.min),
    max: bound(s.def.type, s.def.max),
    updatedBy: s.updatedBy,
    updateTime: s.updatedAt ? timestampFromDate(s.updatedAt) : undefined,
  });
}

export function createSettingsService(db: Prisma, settings: Settings): ServiceImpl<typeof SettingsService> {
  const list = () => settings.all().map(settingToProto);

  // Checks every value first; then stores all of them with their history in one transaction.
  const apply = async (ctx: HandlerContext, values: Record<string, string>) => {
    const entries = Object.entries(values);
    if (entries.length === 0) throw invalid("no settings given");
    if (entries.length > SETTINGS.length) throw invalid("more settings than exist");
    const problems: string[] = [];
    const checked = entries.map(([key, raw]) => {
      if (raw.trim() === "") return { key, value: undefined };
      const r = normalise(key, raw);
      if ("error" in r) problems.push(r.error);
      return { key, value: "value" in r ? r.value : undefined };
    });
    if (problems.length > 0) throw invalid(problems.join("; "));
    const before = new Map(settings.all().map((s) => [s.def.key, s]));
    const who = callerName(ctx);
    const changes = checked.filter((c) => {
      const b = before.get(c.key)!;
      return c.value === undefined ? !b.isDefault : b.isDefault || b.value !== c.value;
    });
    await writeSettings(
      db,
      changes.map((c) => {
        const b = before.get(c.key)!;
        return { key: c.key, before: b.isDefault ? null : b.value, after: c.value ?? null };
      }),
      who,
    );
    await settings.load();
    if (changes.length > 0) {
      await audit(db, ctx, {
        target: "settings",
        before: Object.fromEntries(changes.map((c) => [c.key, before.get(c.key)!.value])),
        after: Object.fromEntries(changes.map((c) => [c.key, c.value ?? `${before.get(c.key)!.defaultValue} (default)`])),
      });
    }
    return changes.length;
  };

  return {
    async listSettings() {
      return { settings: list() };
    },

    async updateSettings(req, ctx) {
      await apply(ctx, req.values);
      return { settings: list() };
    },

    async listSettingChanges(req) {
      const key = text("key", req.key, { max: 64 });
      const rows = await listSettingChanges(db, key || undefined, pageSize(req.pageSize));
      return {
        changes: rows.map((r) => create(SettingChangeSchema, { key: r.key, before: r.before ?? "", after: r.after ?? "", changedBy: r.changedBy, changeTime: timestampFromDate(r.changedAt) })),
      };
    },

    async exportSettings() {
      const values = Object.fromEntries(settings.all().filter((s) => !s.isDefault).map((s) => [s.def.key, s.value]));
      return { json: JSON.stringify(values, null, 2) };
    },

    async importSettings(req, ctx) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(req.json);
      } catch {
        throw invalid("json is not valid JSON");
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw invalid('json must be an object of settings, like {"poll_interval": "2m"}');
      const values: Record<string, string> = {};
      for (const [k, v] of Object.entries(parsed)) {
        if (typeof v !== "string" && typeof v !== "number") throw invalid(`${k} must be a string or number`);
        values[k] = String(v);
      }
      const changed = await apply(ctx, values);
      return { settings: list(), changed };
    },
  };
}
