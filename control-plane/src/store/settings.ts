import type { Prisma } from "./types.ts";

export interface StoredSetting {
  key: string;
  // Text as stored by writeSettings; older rows may hold a JSON number.
  value: unknown;
  updatedBy: string;
  updatedAt: Date;
}

export interface SettingChangeRow {
  key: string;
  before: string | null;
  after: string | null;
  changedBy: string;
  changedAt: Date;
}

// One setting changed: `after` null puts it back to its default (the row is removed).
export interface SettingWrite {
  key: string;
  before: string | null;
  after: string | null;
}

export function readSettings(db: Prisma, keys: string[]): Promise<StoredSetting[]> {
  return db.setting.findMany({ where: { key: { in: keys } } });
}

// Stores every change with its history entry in one transaction.
export async function writeSettings(db: Prisma, changes: readonly SettingWrite[], changedBy: string): Promise<void> {
  await db.$transaction(async (tx) => {
    for (const c of changes) {
      if (c.after === null) await tx.setting.delete({ where: { key: c.key } });
      else await tx.setting.upsert({ where: { key: c.key }, create: { key: c.key, value: c.after, updatedBy: changedBy }, update: { value: c.after, updatedBy: changedBy, updatedAt: new Date() } });
      await tx.settingChange.create({ data: { key: c.key, before: c.before, after: c.after, changedBy } });
    }
  });
}

// Newest first; all settings, or one.
export function listSettingChanges(db: Prisma, key: string | undefined, take: number): Promise<SettingChangeRow[]> {
  return db.settingChange.findMany({ where: key ? { key } : {}, orderBy: { id: "desc" }, take });
}
