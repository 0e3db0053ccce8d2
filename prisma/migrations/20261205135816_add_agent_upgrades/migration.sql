-- CreateTable
CREATE TABLE "agent_upgrades" (
    "id" UUID NOT NULL,
    "agent_id" UUID NOT NULL,
    "command_id" UUID,
    "from_version" TEXT NOT NULL,
    "to_version" TEXT NOT NULL,
    "platform" TEXT NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'queued',
    "message" TEXT NOT NULL DEFAULT '',
    "rollout_id" UUID,
    "automatic" BOOLEAN NOT NULL DEFAULT false,
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "installed_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "agent_upgrades_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "agent_upgrades_command_id_key" ON "agent_upgrades"("command_id");

-- CreateIndex
CREATE INDEX "agent_upgrades_state_idx" ON "agent_upgrades"("state");

-- CreateIndex
CREATE INDEX "agent_upgrades_agent_id_created_at_idx" ON "agent_upgrades"("agent_id", "created_at");

-- CreateIndex
CREATE INDEX "agent_upgrades_rollout_id_idx" ON "agent_upgrades"("rollout_id");

-- CreateIndex
CREATE INDEX "agent_upgrades_created_at_idx" ON "agent_upgrades"("created_at");

-- AddForeignKey
ALTER TABLE "agent_upgrades" ADD CONSTRAINT "agent_upgrades_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "agent_upgrades" ADD CONSTRAINT "agent_upgrades_command_id_fkey" FOREIGN KEY ("command_id") REFERENCES "commands"("id") ON DELETE SET NULL ON UPDATE CASCADE;
