import { readdir } from "node:fs/promises";
import path from "node:path";
import { compareEvr } from "../vercmp.ts";

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

// Every version of `name` with a package file in the cache (name-version-arch.pkg.tar.*),
// newest first. A version is pkgver-pkgrel with an optional epoch ("1:2.0-3").
export async function cachedVersions(cacheDirs: readonly string[], name: string): Promise<string[]> {
  const prefix = `${name}-`;
  const versions = new Set<string>();
  for (const dir of cacheDirs) {
    for (const entry of await readdir(dir).catch(() => [] as string[])) {
      if (!entry.startsWith(prefix)) continue;
      // Exactly two dashes in the version part: a longer name ("foo-bar-1.0-1-x86_64…") has three.
      const m = /^([^-/]+-[^-/]+)-[^-/]+\.pkg\.tar\.(zst|xz|gz)$/.exec(entry.slice(prefix.length));
      if (m) versions.add(m[1]!);
    }
  }
  return [...versions].sort((a, b) => compareEvr(b, a, true));
}
