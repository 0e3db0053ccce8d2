import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

// A stateful stand-in for apt on a Debian host, as shell scripts: `apt list --upgradable`,
// `apt-get -s install` (simulation), `apt-get install`, `apt-cache policy` and `dpkg-query -W`,
// answering from three files in `dir`: installed ("name arch version"), available ("name arch
// version suite": the candidate) and older (the same, earlier versions a repository still has,
// newest first). A pinned version no repository has is "not found", as apt says it. Installing "nginx" drags in a new dependency, as real upgrades
// do; a package named "broken-*" fails in its post-installation script like a real dpkg
// error. Every apt-get argv is appended to `dir/argv.log`, one line per run.
export interface FakeApt {
  bin: string;
  installed(): Promise<Map<string, string>>;
  argvLog(): Promise<string[]>;
}

const APT = String.raw`#!/bin/sh
# apt list --upgradable
[ "$1" = "list" ] || { echo "E: fake apt only lists" >&2; exit 100; }
echo "Listing..."
while read -r name arch ver suite; do
  cur=$(grep "^$name $arch " "$STATE/installed" | cut -d' ' -f3)
  [ -n "$cur" ] && [ "$cur" != "$ver" ] && echo "$name/$suite $ver $arch [upgradable from: $cur]"
done < "$STATE/available"
exit 0
`;

const APT_GET = String.raw`#!/bin/sh
echo "$*" >> "$STATE/argv.log"
sim=0; only=0; specs=""; seen=0
for a in "$@"; do
  if [ "$seen" = 1 ]; then specs="$specs $a"; continue; fi
  case "$a" in
    -s) sim=1;;
    --only-upgrade) only=1;;
    --) seen=1;;
    update) echo "Hit:1 http://deb.debian.org/debian bookworm InRelease"; exit 0;;
  esac
done
[ "$sim" = 1 ] && echo "NOTE: This is only a simulation!"
echo "Reading package lists..."
plan=""
for spec in $specs; do
  name=$(echo "$spec" | sed 's/[:=].*//'); want=$(echo "$spec" | sed -n 's/^[^=]*=//p')
  line=$(grep "^$name " "$STATE/available")
  [ -n "$line" ] || { echo "E: Unable to locate package $name" >&2; exit 100; }
  if [ -n "$want" ] && ! cut -d' ' -f1,3 "$STATE/available" "$STATE/older" | grep -qxF "$name $want"; then
    echo "E: Version '$want' for '$name' was not found" >&2; exit 100
  fi
  arch=$(echo "$line" | cut -d' ' -f2); ver=$want; [ -n "$ver" ] || ver=$(echo "$line" | cut -d' ' -f3)
  cur=$(grep "^$name $arch " "$STATE/installed" | cut -d' ' -f3)
  if [ -z "$cur" ] && [ "$only" = 1 ]; then echo "Skipping $name, it is not installed and only upgrades are requested."; continue; fi
  if [ "$cur" = "$ver" ]; then echo "$name is already the newest version ($ver)."; continue; fi
  plan="$plan $name:$arch:$ver:$cur"
  if [ "$name" = nginx ] && ! grep -q "^libnginx-mod-new " "$STATE/installed"; then
    case " $specs " in *" libnginx-mod-new"*) ;; *) plan="$plan libnginx-mod-new:amd64:1.22.1-9+deb12u2:";; esac
  fi
done
status=0
for p in $plan; do
  name=$(echo "$p" | cut -d: -f1); arch=$(echo "$p" | cut -d: -f2); ver=$(echo "$p" | cut -d: -f3); cur=$(echo "$p" | cut -d: -f4-)
  if [ "$sim" = 1 ]; then
    if [ -n "$cur" ]; then echo "Inst $name [$cur] ($ver Debian:12/stable [$arch])"; else echo "Inst $name ($ver Debian:12/stable [$arch])"; fi
    continue
  fi
  case "$name" in
    broken-*)
      echo "Setting up $name ($ver) ..."
      echo "dpkg: error processing package $name (--configure):" >&2
      echo " installed $name package post-installation script subprocess returned error exit status 1" >&2
      status=100;;
    *)
      echo "Unpacking $name ($ver) over ($cur) ..."; echo "Setting up $name ($ver) ..."
      grep -v "^$name $arch " "$STATE/installed" > "$STATE/installed.new"
      echo "$name $arch $ver" >> "$STATE/installed.new"; mv "$STATE/installed.new" "$STATE/installed";;
  esac
done
[ "$status" = 0 ] || echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
exit $status
`;

const DPKG_QUERY = String.raw`#!/bin/sh
seen=0
for a in "$@"; do
  if [ "$seen" = 1 ]; then grep "^$a " "$STATE/installed" | sed 's/$/ ii /'; fi
  [ "$a" = "--" ] && seen=1
done
exit 0
`;

// apt-cache policy: the candidate, the installed version (***), then the older ones.
const APT_CACHE = String.raw`#!/bin/sh
[ "$1" = "policy" ] || exit 0
shift; [ "$1" = "--" ] && shift
for spec in "$@"; do
  name=$(echo "$spec" | sed 's/:.*//')
  cur=$(grep "^$name " "$STATE/installed" | cut -d' ' -f3)
  cand=$(grep "^$name " "$STATE/available" | cut -d' ' -f3)
  [ -n "$cur$cand" ] || continue
  echo "$name:"
  echo "  Installed: ${"$"}{cur:-(none)}"
  echo "  Candidate: ${"$"}{cand:-$cur}"
  echo "  Version table:"
  if [ -n "$cand" ] && [ "$cand" != "$cur" ]; then
    grep "^$name " "$STATE/available" | while read -r n a v suite; do echo "     $v 500"; echo "        500 http://deb.debian.org/debian $suite/main $a Packages"; done
  fi
  if [ -n "$cur" ]; then echo " *** $cur 100"; echo "        100 /var/lib/dpkg/status"; fi
  grep "^$name " "$STATE/older" | while read -r n a v suite; do
    [ "$v" = "$cur" ] && continue
    echo "     $v 500"; echo "        500 http://deb.debian.org/debian $suite/main $a Packages"
  done
done
exit 0
`;

export async function createFakeApt(dir: string, state: { installed: string[]; available: string[]; older?: string[] }): Promise<FakeApt> {
  const bin = path.join(dir, "bin");
  const stateDir = path.join(dir, "state");
  await mkdir(bin, { recursive: true });
  await mkdir(stateDir, { recursive: true });
  await writeFile(path.join(stateDir, "installed"), `${state.installed.join("\n")}\n`);
  await writeFile(path.join(stateDir, "available"), `${state.available.join("\n")}\n`);
  await writeFile(path.join(stateDir, "older"), state.older?.length ? `${state.older.join("\n")}\n` : "");
  const scripts = { apt: APT, "apt-get": APT_GET, "dpkg-query": DPKG_QUERY, "apt-cache": APT_CACHE };
  for (const [name, script] of Object.entries(scripts)) {
    // The state directory is baked in: the agent hands package tools a trimmed environment.
    await writeFile(path.join(bin, name), script.replace("#!/bin/sh\n", `#!/bin/sh\nSTATE='${stateDir}'\n`));
    await chmod(path.join(bin, name), 0o755);
  }
  return {
    bin,
    async installed() {
      const text = await readFile(path.join(stateDir, "installed"), "utf8");
      return new Map(text.split("\n").filter(Boolean).map((l) => [l.split(" ")[0]!, l.split(" ")[2]!]));
    },
    async argvLog() {
      return (await readFile(path.join(stateDir, "argv.log"), "utf8").catch(() => "")).split("\n").filter(Boolean);
    },
  };
}
