-- AlterTable
ALTER TABLE "agents" ADD COLUMN     "reboot_notified_at" TIMESTAMPTZ(3);
