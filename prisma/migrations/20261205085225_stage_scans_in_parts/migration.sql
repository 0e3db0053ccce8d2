-- CreateTable
CREATE TABLE "scan_uploads" (
    "id" UUID NOT NULL,
    "agent_id" UUID NOT NULL,
    "scan_id" UUID NOT NULL,
    "part_count" INTEGER NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "applied_source" TEXT,
    "applied_name" TEXT,
    "applied_architecture" TEXT,

    CONSTRAINT "scan_uploads_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "scan_upload_parts" (
    "upload_id" UUID NOT NULL,
    "index" INTEGER NOT NULL,
    "update_count" INTEGER NOT NULL,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "scan_upload_parts_pkey" PRIMARY KEY ("upload_id","index")
);

-- CreateTable
CREATE TABLE "staged_updates" (
    "upload_id" UUID NOT NULL,
    "source" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "architecture" TEXT NOT NULL,
    "current_version" TEXT NOT NULL,
    "available_version" TEXT NOT NULL,
    "repository" TEXT NOT NULL,
    "severity" TEXT NOT NULL,
    "security" BOOLEAN NOT NULL,
    "size_bytes" BIGINT NOT NULL,
    "reboot_required" BOOLEAN NOT NULL,

    CONSTRAINT "staged_updates_pkey" PRIMARY KEY ("upload_id","source","name","architecture")
);

-- CreateTable
CREATE TABLE "scan_leases" (
    "agent_id" UUID NOT NULL,
    "holder" UUID NOT NULL,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "scan_leases_pkey" PRIMARY KEY ("agent_id")
);

-- CreateIndex
CREATE INDEX "scan_uploads_updated_at_idx" ON "scan_uploads"("updated_at");

-- CreateIndex
CREATE UNIQUE INDEX "scan_uploads_agent_id_scan_id_key" ON "scan_uploads"("agent_id", "scan_id");
