import { timestampDate } from "@bufbuild/protobuf/wkt";

// Plain aligned tables for people; scripts use --json.
export function table(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return "(none)\n";
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

export function ago(date: Date | undefined, now = new Date()): string {
  if (!date) return "never";
  const s = Math.round((now.getTime() - date.getTime()) / 1000);
  if (s < 0) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

// Enum value → lower-case name without the type prefix: CommandState.SUCCEEDED → "succeeded".
export function enumName(values: Record<number, string>, value: number): string {
  return (values[value] ?? String(value)).toLowerCase();
}

// Bytes in binary units for tables: 1536 → "1.5 KiB".
export function size(bytes: bigint | number): string {
  let n = Number(bytes);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

// A protobuf Timestamp as a Date (undefined stays undefined).
export const time = (t: { seconds: bigint; nanos: number } | undefined) => (t ? timestampDate(t as never) : undefined);
