import path from "node:path";
import { defineConfig } from "prisma/config";

// The Prisma 7 CLI wants a schema-engine binary it would download; `prisma generate` does
// not use it, and the control plane applies migrations itself (control-plane/src/store/migrate.ts).
process.env.PRISMA_SCHEMA_ENGINE_BINARY ??= path.join(import.meta.dirname, "prisma", "schema.prisma");

export default defineConfig({
  schema: path.join(import.meta.dirname, "prisma", "schema.prisma"),
  migrations: { path: path.join(import.meta.dirname, "prisma", "migrations") },
});
