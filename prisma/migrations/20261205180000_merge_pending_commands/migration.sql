-- AlterTable
ALTER TABLE "command_idempotency_keys" ADD COLUMN     "merged" BOOLEAN NOT NULL DEFAULT false;
