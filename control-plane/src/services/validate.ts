import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { isUuid } from "../ids.ts";

export { invalid, text } from "../domain/input.ts";
import { invalid } from "../domain/input.ts";

// The range protobuf defines for a Timestamp, 0001-01-01 to 9999-12-31 UTC: any clock, Date and
// database column here holds it.
const MIN_TIMESTAMP_SECONDS = -62_135_596_800n;
const MAX_TIMESTAMP_SECONDS = 253_402_300_799n;

export function time(field: string, value: Timestamp): Date {
  if (value.seconds < MIN_TIMESTAMP_SECONDS || value.seconds > MAX_TIMESTAMP_SECONDS || value.nanos < 0 || value.nanos > 999_999_999) {
    throw invalid(`${field} must be a time from 0001-01-01 to 9999-12-31 UTC (got ${value.seconds} seconds, ${value.nanos} nanoseconds)`);
  }
  return timestampDate(value);
}

// The largest value a bigint column (PostgreSQL's int8) holds.
export const MAX_INT64 = 2n ** 63n - 1n;

// A count or size stored in a bigint column (wire type uint64).
export function int64(field: string, value: bigint): bigint {
  if (value < 0n || value > MAX_INT64) throw invalid(`${field} must be from 0 to ${MAX_INT64} (got ${value})`);
  return value;
}

export function uuid(field: string, value: string): string {
  if (!isUuid(value)) throw invalid(`${field} must be a UUID (got "${value.slice(0, 64)}")`);
  return value;
}

export function pageSize(value: number): number {
  if (value < 0 || value > 500) throw invalid("page_size must be from 0 to 500");
  return value === 0 ? 50 : value;
}

export function pageToken(value: string): string | undefined {
  if (value === "") return undefined;
  const id = Buffer.from(value, "base64url").toString("utf8");
  if (isUuid(id)) return id;
  throw invalid("page_token is not valid; pass the next_page_token of a previous page");
}

export function nextPageToken(id: string | undefined): string {
  return id ? Buffer.from(id, "utf8").toString("base64url") : "";
}

// Pages of tables with a bigint identity column (audit, security events): the last ID seen.
export function idPageToken(value: string): bigint | undefined {
  if (value === "") return undefined;
  const decoded = Buffer.from(value, "base64url").toString("utf8");
  if (!/^\d{1,19}$/.test(decoded) || BigInt(decoded) > MAX_INT64) throw invalid("page_token is not valid; pass the next_page_token of a previous page");
  return BigInt(decoded);
}

export const nextIdPageToken = (id: bigint | undefined): string => (id === undefined ? "" : Buffer.from(id.toString()).toString("base64url"));
