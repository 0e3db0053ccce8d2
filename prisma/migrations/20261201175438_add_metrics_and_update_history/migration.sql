-- reboot_required starts false for existing agents: each agent's next poll sets it from its status.
-- AlterTable
ALTER TABLE "agents" ADD COLUMN     "reboot_required" BOOLEAN NOT NULL DEFAULT false;

-- CreateTable
CREATE TABLE "metric_samples" (
    "id" UUID NOT NULL,
    "agent_id" UUID NOT NULL,
    "time" TIMESTAMPTZ(3) NOT NULL,
    "system" BYTEA,
    "storage" BYTEA,

    CONSTRAINT "metric_samples_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "update_events" (
    "id" BIGSERIAL NOT NULL,
    "agent_id" UUID NOT NULL,
    "time" TIMESTAMPTZ(3) NOT NULL,
    "kind" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "architecture" TEXT NOT NULL,
    "version" TEXT NOT NULL,
    "command_id" UUID,

    CONSTRAINT "update_events_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "metric_samples_agent_id_time_idx" ON "metric_samples"("agent_id", "time");

-- CreateIndex
CREATE INDEX "metric_samples_time_idx" ON "metric_samples"("time");

-- CreateIndex
CREATE INDEX "update_events_time_idx" ON "update_events"("time");

-- CreateIndex
CREATE INDEX "update_events_agent_id_time_idx" ON "update_events"("agent_id", "time");

-- CreateIndex
CREATE INDEX "agents_reboot_required_hostname_idx" ON "agents"("reboot_required", "hostname");

-- CreateIndex
CREATE INDEX "commands_finished_at_idx" ON "commands"("finished_at");

-- AddForeignKey
ALTER TABLE "metric_samples" ADD CONSTRAINT "metric_samples_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "update_events" ADD CONSTRAINT "update_events_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE CASCADE;

