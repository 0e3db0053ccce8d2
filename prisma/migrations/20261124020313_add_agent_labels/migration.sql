-- AlterTable
ALTER TABLE "agents" ADD COLUMN     "group" TEXT NOT NULL DEFAULT '',
ADD COLUMN     "tags" TEXT[] DEFAULT ARRAY[]::TEXT[];
