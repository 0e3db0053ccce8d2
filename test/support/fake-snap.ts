import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

// A stateful stand-in for snapd's CLI: `snap list`, `snap refresh --list` and `snap refresh
// <names>`, answering from `installed` ("name version rev") and `available` ("name version rev")
// in `dir`. Coreutils come from the real PATH.
const SNAP = String.raw`#!/bin/sh
header() { echo "Name      Version     Rev    $1  Publisher   Notes"; }
if [ "$1" = "list" ]; then
  header "Tracking     "
  while read -r name ver rev; do echo "$name  $ver  $rev  latest/stable  publisher✓  -"; done < "$STATE/installed"
  exit 0
fi
if [ "$1" = "refresh" ] && [ "$2" = "--list" ]; then
  found=0
  while read -r name ver rev; do
    cur=$(grep "^$name " "$STATE/installed" | cut -d' ' -f3)
    if [ -n "$cur" ] && [ "$cur" != "$rev" ]; then
      [ "$found" = 0 ] && header "Size"
      found=1
      echo "$name  $ver  $rev  12MB  publisher✓  -"
    fi
  done < "$STATE/available"
  [ "$found" = 0 ] && echo "All snaps up to date." >&2
  exit 0
fi
if [ "$1" = "refresh" ]; then
  shift; [ "$1" = "--" ] && shift
  for name in "$@"; do
    line=$(grep "^$name " "$STATE/available")
    [ -n "$line" ] || { echo "error: snap \"$name\" is not installed" >&2; exit 1; }
    grep -v "^$name " "$STATE/installed" > "$STATE/installed.new"; echo "$line" >> "$STATE/installed.new"; mv "$STATE/installed.new" "$STATE/installed"
    echo "$name $(echo "$line" | cut -d' ' -f2) from publisher✓ refreshed"
  done
  exit 0
fi
echo "error: unknown command" >&2; exit 64
`;

export async function createFakeSnap(dir: string, state: { installed: string[]; available: string[] }) {
  const bin = path.join(dir, "bin");
  const stateDir = path.join(dir, "snap-state");
  await mkdir(bin, { recursive: true });
  await mkdir(stateDir, { recursive: true });
  await writeFile(path.join(stateDir, "installed"), `${state.installed.join("\n")}\n`);
  await writeFile(path.join(stateDir, "available"), `${state.available.join("\n")}\n`);
  await writeFile(path.join(bin, "snap"), SNAP.replace("#!/bin/sh\n", `#!/bin/sh\nSTATE='${stateDir}'\n`));
  await chmod(path.join(bin, "snap"), 0o755);
  return {
    bin,
    async installed() {
      const text = await readFile(path.join(stateDir, "installed"), "utf8");
      return new Map(text.split("\n").filter(Boolean).map((l) => [l.split(" ")[0]!, l.split(" ")[1]!]));
    },
  };
}
