-- AlterTable
ALTER TABLE "commands" ADD COLUMN     "first_sequence" BIGINT;

-- Commands delivered before this migration were delivered once: their sequence is the first.
UPDATE "commands" SET "first_sequence" = "sequence" WHERE "sequence" IS NOT NULL;

-- CreateTable
CREATE TABLE "command_idempotency_keys" (
    "caller" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "request_hash" BYTEA NOT NULL,
    "command_id" UUID NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "command_idempotency_keys_pkey" PRIMARY KEY ("caller","key")
);

-- CreateIndex
CREATE INDEX "command_idempotency_keys_created_at_idx" ON "command_idempotency_keys"("created_at");

-- CreateIndex
CREATE INDEX "command_idempotency_keys_command_id_idx" ON "command_idempotency_keys"("command_id");

-- AddForeignKey
ALTER TABLE "command_idempotency_keys" ADD CONSTRAINT "command_idempotency_keys_command_id_fkey" FOREIGN KEY ("command_id") REFERENCES "commands"("id") ON DELETE CASCADE ON UPDATE CASCADE;
