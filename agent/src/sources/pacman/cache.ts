import { readdir } from "node:fs/promises";
import path from "node:path";

export const DEFAULT_CACHE_DIR = "/var/cache/pacman/pkg";

// The cached package file for name-version, for `pacman -U` (a rollback).
export async function findCachedPackage(cacheDirs: readonly string[], name: string, version: string): Promise<string | undefined> {
  const prefix = `${name}-${version}-`;
  for (const dir of cacheDirs) {
    const entries = await readdir(dir).catch(() => [] as string[]);
    // name-version-arch.pkg.tar.{zst,xz}; the arch part has no dash, so a longer name cannot match.
    const hit = entries.find((e) => e.startsWith(prefix) && /^[^-]+\.pkg\.tar\.(zst|xz|gz)$/.test(e.slice(prefix.length)));
    if (hit) return path.join(dir, hit);
  }
  return undefined;
}
