-- AlterEnum
ALTER TYPE "command_type" ADD VALUE 'list_package_versions';
