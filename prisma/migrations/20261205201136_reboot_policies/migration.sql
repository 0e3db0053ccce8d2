-- CreateEnum
CREATE TYPE "reboot_mode" AS ENUM ('never', 'when_required', 'always');

-- AlterTable
ALTER TABLE "agents" ADD COLUMN     "reboot_overdue_since" TIMESTAMPTZ(3);

-- AlterTable
ALTER TABLE "commands" ADD COLUMN     "followed_up_at" TIMESTAMPTZ(3);

-- AlterTable
ALTER TABLE "maintenance_windows" ADD COLUMN     "auto_install" BOOLEAN NOT NULL DEFAULT false;

-- CreateTable
CREATE TABLE "reboot_policies" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "all_agents" BOOLEAN NOT NULL DEFAULT false,
    "groups" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "agent_ids" UUID[] DEFAULT ARRAY[]::UUID[],
    "mode" "reboot_mode" NOT NULL,
    "window_only" BOOLEAN NOT NULL DEFAULT false,
    "pre_hook" TEXT NOT NULL DEFAULT '',
    "post_hook" TEXT NOT NULL DEFAULT '',
    "hook_timeout_seconds" INTEGER NOT NULL,
    "return_timeout_seconds" INTEGER NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "reboot_policies_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "reboot_policies_name_key" ON "reboot_policies"("name");

-- CreateIndex
CREATE INDEX "commands_type_followed_up_at_finished_at_idx" ON "commands"("type", "followed_up_at", "finished_at");

-- Commands that finished before reboot policies existed are not followed up: no policy reboots
-- a host for an install made before it was written.
UPDATE "commands" SET "followed_up_at" = "finished_at" WHERE "finished_at" IS NOT NULL;
