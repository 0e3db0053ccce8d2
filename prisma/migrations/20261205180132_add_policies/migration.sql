-- AlterTable
ALTER TABLE "package_updates" ADD COLUMN     "version_seen_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;

-- Backfill (hand-written): when each update's current available_version was first seen, from
-- the latest "found" event of that version (scans record one whenever a version is new), else
-- first_seen_at. Without it every existing update would look brand new, and a policy's delay
-- would start again for all of them.
UPDATE "package_updates" p SET "version_seen_at" = COALESCE(
  (SELECT max(e."time") FROM "update_events" e
    WHERE e."agent_id" = p."agent_id" AND e."source" = p."source" AND e."name" = p."name"
      AND e."architecture" = p."architecture" AND e."kind" = 'found' AND e."version" = p."available_version"),
  p."first_seen_at");

-- CreateTable
CREATE TABLE "policies" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "severities" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "security_only" BOOLEAN NOT NULL DEFAULT false,
    "sources" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "name_patterns" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "groups" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "exclusions" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "delay_seconds" INTEGER NOT NULL DEFAULT 0,
    "position" INTEGER NOT NULL DEFAULT 0,
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_by" TEXT NOT NULL,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "policies_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "policies_name_key" ON "policies"("name");
