-- CreateTable
CREATE TABLE "rollouts" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "all_agents" BOOLEAN NOT NULL DEFAULT false,
    "groups" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "agent_ids" UUID[] DEFAULT ARRAY[]::UUID[],
    "all_approved" BOOLEAN NOT NULL,
    "update_keys" JSONB NOT NULL DEFAULT '[]',
    "state" TEXT NOT NULL,
    "current_ring" INTEGER NOT NULL DEFAULT 0,
    "halt_reason" TEXT NOT NULL DEFAULT '',
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "ended_at" TIMESTAMPTZ(3),

    CONSTRAINT "rollouts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "rollout_rings" (
    "rollout_id" UUID NOT NULL,
    "index" INTEGER NOT NULL,
    "name" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "agent_ids" UUID[] DEFAULT ARRAY[]::UUID[],
    "percent" INTEGER NOT NULL DEFAULT 0,
    "threshold_percent" INTEGER NOT NULL,
    "soak_seconds" INTEGER NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'waiting',
    "started_at" TIMESTAMPTZ(3),
    "soak_until" TIMESTAMPTZ(3),

    CONSTRAINT "rollout_rings_pkey" PRIMARY KEY ("rollout_id","index")
);

-- CreateTable
CREATE TABLE "rollout_hosts" (
    "rollout_id" UUID NOT NULL,
    "agent_id" UUID NOT NULL,
    "hostname" TEXT NOT NULL,
    "ring" INTEGER NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'waiting',
    "command_id" UUID,
    "command_merged" BOOLEAN NOT NULL DEFAULT false,
    "message" TEXT NOT NULL DEFAULT '',
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "rollout_hosts_pkey" PRIMARY KEY ("rollout_id","agent_id")
);

-- CreateIndex
CREATE UNIQUE INDEX "rollouts_name_key" ON "rollouts"("name");

-- CreateIndex
CREATE INDEX "rollouts_state_idx" ON "rollouts"("state");

-- CreateIndex
CREATE INDEX "rollouts_created_at_id_idx" ON "rollouts"("created_at", "id");

-- CreateIndex
CREATE INDEX "rollout_hosts_rollout_id_ring_state_idx" ON "rollout_hosts"("rollout_id", "ring", "state");

-- CreateIndex
CREATE INDEX "rollout_hosts_rollout_id_ring_hostname_agent_id_idx" ON "rollout_hosts"("rollout_id", "ring", "hostname", "agent_id");

-- CreateIndex
CREATE INDEX "rollout_hosts_state_command_id_idx" ON "rollout_hosts"("state", "command_id");

-- AddForeignKey
ALTER TABLE "rollout_rings" ADD CONSTRAINT "rollout_rings_rollout_id_fkey" FOREIGN KEY ("rollout_id") REFERENCES "rollouts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "rollout_hosts" ADD CONSTRAINT "rollout_hosts_rollout_id_fkey" FOREIGN KEY ("rollout_id") REFERENCES "rollouts"("id") ON DELETE CASCADE ON UPDATE CASCADE;
