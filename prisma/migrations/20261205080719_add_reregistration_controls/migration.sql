-- AlterTable
ALTER TABLE "agents" ADD COLUMN     "register_proof_time" TIMESTAMPTZ(3),
ADD COLUMN     "reregistration_allowed_by" TEXT,
ADD COLUMN     "reregistration_allowed_until" TIMESTAMPTZ(3);
