-- CreateEnum
CREATE TYPE "WindowKind" AS ENUM ('maintenance', 'blackout');

-- CreateTable
CREATE TABLE "maintenance_windows" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "kind" "WindowKind" NOT NULL,
    "rrule" TEXT NOT NULL,
    "dtstart" TEXT NOT NULL,
    "duration_seconds" INTEGER NOT NULL,
    "time_zone" TEXT NOT NULL,
    "all_agents" BOOLEAN NOT NULL DEFAULT false,
    "groups" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "agent_ids" UUID[] DEFAULT ARRAY[]::UUID[],
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "maintenance_windows_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "maintenance_windows_name_key" ON "maintenance_windows"("name");
