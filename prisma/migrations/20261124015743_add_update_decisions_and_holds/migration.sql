-- AlterTable
ALTER TABLE "package_updates" ADD COLUMN     "command_id" UUID,
ADD COLUMN     "decided_at" TIMESTAMPTZ(3),
ADD COLUMN     "decided_by" TEXT,
ADD COLUMN     "status" TEXT NOT NULL DEFAULT 'pending';

-- CreateTable
CREATE TABLE "holds" (
    "id" UUID NOT NULL,
    "agent_id" UUID,
    "source" TEXT NOT NULL DEFAULT '*',
    "name" TEXT NOT NULL,
    "reason" TEXT NOT NULL DEFAULT '',
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "holds_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "holds_agent_id_idx" ON "holds"("agent_id");

-- CreateIndex
CREATE INDEX "package_updates_status_idx" ON "package_updates"("status");

-- CreateIndex
CREATE INDEX "package_updates_name_idx" ON "package_updates"("name");

-- AddForeignKey
ALTER TABLE "holds" ADD CONSTRAINT "holds_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE CASCADE;
