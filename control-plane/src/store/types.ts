import type { PrismaClient } from "../generated/prisma/client.ts";

export type Prisma = PrismaClient;
// The client handed to a callback of prisma.$transaction.
export type Tx = Omit<PrismaClient, "$connect" | "$disconnect" | "$on" | "$transaction" | "$extends">;

// Prisma's Bytes columns take Uint8Array backed by a plain ArrayBuffer.
export function bytes(data: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(data);
}

// The generated client's enums and rows that the layers above name: they take them from here,
// so only store/ imports the generated client.
export type { ApiKey, AuditEntry, CommandCreator, CommandState, CommandType } from "../generated/prisma/client.ts";
