-- CreateTable
CREATE TABLE "agent_releases" (
    "id" UUID NOT NULL,
    "version" TEXT NOT NULL,
    "platform" TEXT NOT NULL,
    "size_bytes" BIGINT NOT NULL,
    "sha256" BYTEA NOT NULL,
    "manifest" BYTEA NOT NULL,
    "chunk_bytes" INTEGER NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'uploading',
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "published_at" TIMESTAMPTZ(3),

    CONSTRAINT "agent_releases_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "agent_release_chunks" (
    "release_id" UUID NOT NULL,
    "seq" INTEGER NOT NULL,
    "data" BYTEA NOT NULL,

    CONSTRAINT "agent_release_chunks_pkey" PRIMARY KEY ("release_id","seq")
);

-- CreateIndex
CREATE INDEX "agent_releases_platform_state_idx" ON "agent_releases"("platform", "state");

-- CreateIndex
CREATE UNIQUE INDEX "agent_releases_version_platform_key" ON "agent_releases"("version", "platform");

-- AddForeignKey
ALTER TABLE "agent_release_chunks" ADD CONSTRAINT "agent_release_chunks_release_id_fkey" FOREIGN KEY ("release_id") REFERENCES "agent_releases"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Artifacts are compressed already (gzip, executables): store chunks out of line without
-- trying to compress them again.
ALTER TABLE "agent_release_chunks" ALTER COLUMN "data" SET STORAGE EXTERNAL;

-- Agent upgrades queued before the registry carry a URL and manifest their sender chose (an
-- operator could queue one): never deliver them. An admin queues them again from the registry.
UPDATE "commands" SET "state" = 'cancelled', "finished_at" = CURRENT_TIMESTAMP
 WHERE "type" = 'update_agent' AND "state" = 'pending';
