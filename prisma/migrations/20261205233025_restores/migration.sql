-- CreateTable
CREATE TABLE "restores" (
    "id" BIGSERIAL NOT NULL,
    "restored_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "backup_taken_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "restores_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "restores_restored_at_idx" ON "restores"("restored_at");
