#!/usr/bin/env bash
# Authors Prisma migrations for prisma/schema.prisma without Prisma 7's schema engine (its CLI
# wants to download a binary). Prisma 6.19's CLI ships the schema engine as WebAssembly; this
# script installs it in a scratch folder outside the project and runs
#   prisma migrate diff --from-migrations prisma/migrations --to-schema-datamodel prisma/schema.prisma
# which replays the existing migrations on a throwaway "shadow" database, compares the result
# with the schema, and prints the SQL for the difference. See docs/migrations.md.
#
#   scripts/migration-diff.sh <name>   write prisma/migrations/<UTC timestamp>_<name>/migration.sql
#   scripts/migration-diff.sh --print  print the SQL, write nothing
#   scripts/migration-diff.sh --check  exit 1 when the schema has changes no migration holds (CI)
#
# Environment:
#   SHADOW_DATABASE_SERVER  a PostgreSQL where the user may CREATE DATABASE; a database named
#                           redflag_shadow_* is created there and dropped again
#                           (default postgres://postgres@127.0.0.1:5432/postgres)
#   PRISMA6_DIR             where the CLI is installed (default: $TMPDIR/redflag-prisma-<versions>)
set -euo pipefail

readonly PRISMA6_VERSION=6.19.3
readonly PG_VERSION=8.23.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly MIGRATIONS="$ROOT/prisma/migrations"
readonly TOOL_DIR="${PRISMA6_DIR:-${TMPDIR:-/tmp}/redflag-prisma-$PRISMA6_VERSION-pg$PG_VERSION}"
export SHADOW_DATABASE_SERVER="${SHADOW_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432/postgres}"

usage() {
  cat >&2 <<'USAGE'
usage: scripts/migration-diff.sh <name>    write prisma/migrations/<UTC timestamp>_<name>/migration.sql
       scripts/migration-diff.sh --print   print the SQL, write nothing
       scripts/migration-diff.sh --check   exit 1 when the schema has changes no migration holds
USAGE
  exit 2
}

mode="${1:-}"
case "$mode" in
  --print | --check) ;;
  "" | -*) usage ;;
  *) [[ "$mode" =~ ^[a-z0-9_]+$ ]] || { echo "migration name: lower-case letters, digits and _ only" >&2; exit 2; } ;;
esac

# Installed beside, then moved into place whole: an install cut short (or two at once) never
# leaves a folder that looks installed and is not.
install_cli() {
  [[ -e "$TOOL_DIR/.installed" ]] && return
  echo "installing prisma@$PRISMA6_VERSION in $TOOL_DIR (once)" >&2
  mkdir -p "$(dirname "$TOOL_DIR")"
  local staging
  staging="$(mktemp -d "$TOOL_DIR.XXXXXX")"
  (cd "$staging" &&
    echo '{ "private": true, "type": "module" }' > package.json &&
    npm install --no-audit --no-fund --loglevel=error \
      "prisma@$PRISMA6_VERSION" "@prisma/adapter-pg@$PRISMA6_VERSION" "pg@$PG_VERSION" >&2) || { rm -rf "$staging"; return 1; }
  touch "$staging/.installed"
  rm -rf "$TOOL_DIR"
  mv -T "$staging" "$TOOL_DIR" 2>/dev/null || rm -rf "$staging"
  [[ -e "$TOOL_DIR/.installed" ]]
}

# The 6.x CLI rejects the Prisma 7 generator options and wants a datasource url; neither
# changes the datamodel, which is all the diff reads.
write_schema_copy() {
  node -e '
    const fs = require("node:fs");
    const [from, to] = process.argv.slice(1);
    const schema = fs.readFileSync(from, "utf8")
      .replace(/^\s*(moduleFormat|importFileExtension|runtime)\s*=.*\n/gm, "")
      .replace(/(datasource\s+\w+\s*\{[^}]*?provider\s*=[^\n]*\n)/, "$1  url = \"postgresql://unused@localhost/unused\"\n");
    fs.writeFileSync(to, schema);
  ' "$ROOT/prisma/schema.prisma" "$1"
}

# The JS schema engine talks to the shadow database through this adapter. Two fixes for the
# adapter 6.19 ships: the engine reads catalog columns of types "char" and name, which it
# cannot map (read them as text), and its own shadow database handling connects to the main
# database and then fails to drop the shadow one.
write_config() {
  cat > "$1" <<'EOF'
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";

const url = new URL(process.env.SHADOW_DATABASE_SERVER!);
const server = {
  host: url.searchParams.get("host") ?? url.hostname,
  port: Number(url.port || 5432),
  user: decodeURIComponent(url.username) || undefined,
  password: decodeURIComponent(url.password) || undefined,
  database: decodeURIComponent(url.pathname.slice(1)) || "postgres",
};

const addFields = pg.Result.prototype.addFields;
pg.Result.prototype.addFields = function (fields: { dataTypeID: number }[]) {
  for (const f of fields) if (f.dataTypeID === 18 || f.dataTypeID === 19) f.dataTypeID = 25;
  return addFields.call(this, fields);
};

async function onServer(sql: string) {
  const client = new pg.Client(server);
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export default defineConfig({
  engine: "js",
  experimental: { adapter: true },
  adapter: async () => {
    const main = new PrismaPg(server);
    return {
      provider: main.provider,
      adapterName: main.adapterName,
      connect: () => main.connect(),
      async connectToShadowDb() {
        const database = `redflag_shadow_${process.pid}_${Date.now()}`;
        await onServer(`CREATE DATABASE "${database}"`);
        const adapter = await new PrismaPg({ ...server, database }).connect();
        const dispose = adapter.dispose.bind(adapter);
        adapter.dispose = async () => {
          await dispose();
          await onServer(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
        };
        return adapter;
      },
    };
  },
});
EOF
}

install_cli
work="$(mktemp -d "$TOOL_DIR/run.XXXXXX")"
trap 'rm -rf "$work"' EXIT
write_schema_copy "$work/schema.prisma"
write_config "$work/prisma.config.ts"

status=0
(
  cd "$work"
  # Only `prisma generate` and the classic engine would use these; any existing file will do.
  export PRISMA_QUERY_ENGINE_LIBRARY="$work/schema.prisma" PRISMA_SCHEMA_ENGINE_BINARY="$work/schema.prisma"
  "$TOOL_DIR/node_modules/.bin/prisma" migrate diff --config prisma.config.ts \
    --from-migrations "$MIGRATIONS" --to-schema-datamodel schema.prisma \
    --script --exit-code --output "$work/migration.sql" 2> "$work/stderr"
) || status=$?

case "$status" in
  0) echo "prisma/schema.prisma and prisma/migrations agree; no migration needed" >&2; exit 0 ;;
  2) ;;
  *) cat "$work/stderr" >&2; echo "prisma migrate diff failed (exit $status)" >&2; exit 1 ;;
esac

case "$mode" in
  --print) cat "$work/migration.sql" ;;
  --check)
    cat "$work/migration.sql" >&2
    echo "prisma/schema.prisma has changes no migration holds; run scripts/migration-diff.sh <name>" >&2
    exit 1
    ;;
  *)
    dir="$MIGRATIONS/$(date -u +%Y%m%d%H%M%S)_$mode"
    mkdir -p "$dir"
    mv "$work/migration.sql" "$dir/migration.sql"
    echo "wrote ${dir#"$ROOT"/}/migration.sql; read it, then commit it with the schema change" >&2
    ;;
esac
