-- CreateTable
CREATE TABLE "setting_changes" (
    "id" BIGSERIAL NOT NULL,
    "key" TEXT NOT NULL,
    "before" TEXT,
    "after" TEXT,
    "changed_by" TEXT NOT NULL,
    "changed_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "setting_changes_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "setting_changes_key_changed_at_idx" ON "setting_changes"("key", "changed_at");

-- CreateIndex
CREATE INDEX "setting_changes_changed_at_idx" ON "setting_changes"("changed_at");
