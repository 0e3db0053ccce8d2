-- AlterTable
ALTER TABLE "agents" ADD COLUMN     "offline_notified_at" TIMESTAMPTZ(3);

-- CreateIndex
CREATE INDEX "agents_offline_notified_at_idx" ON "agents"("offline_notified_at");
