-- CreateEnum
CREATE TYPE "command_creator" AS ENUM ('unknown', 'person', 'api_token', 'admin_key', 'system');

-- AlterTable
ALTER TABLE "commands" ADD COLUMN     "created_by_kind" "command_creator" NOT NULL DEFAULT 'unknown';
