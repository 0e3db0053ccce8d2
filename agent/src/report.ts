import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { plural } from "@redflag/common/plural";
import {
  IncompleteScanSchema,
  type ReportResultsRequestSchema,
  type ReportResultsResponse,
  ReportResultsResponseSchema,
  type ScanPart,
  type ScanReport,
  ScanReportSchema,
} from "@redflag/gen/agent_service_pb";
import { CommandOutcome, type CommandResult, CommandResultSchema, type ScanUpdatesResult } from "@redflag/gen/command_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentApi } from "./client.ts";
import { describeError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { Session } from "./session.ts";
import type { AutoScans } from "./state/auto-scans.ts";
import type { Journal } from "./state/journal.ts";
import { PART_UPDATES, type ScanPartStore } from "./state/scan-parts.ts";

// What one ReportResults call carries at most. The control plane accepts at least 1,000 updates
// and install package results per call however it is configured, and 8 MiB by default.
const BATCH_RESULTS = 100;
const BATCH_SCANS = 50;
const BATCH_ENTRIES = PART_UPDATES;
const BATCH_BYTES = 4 * 1024 * 1024;
// Rounds of "send the missing parts, then the scan again" per flush.
const SPLIT_ROUNDS = 3;
// Calls per flush that carry on applying one big scan (the control plane goes through a bounded
// number of updates per call); each makes progress, this only bounds a flush.
const APPLY_ROUNDS = 1000;

export interface ReporterDeps {
  api: AgentApi;
  session: Session;
  journal: Journal;
  autoScans: AutoScans;
  scanParts: ScanPartStore;
  logger: Logger;
}

export interface Reporter {
  // Sends unacknowledged results and scan reports until the control plane has them or refuses
  // them for good; returns how many results it acknowledged. Transient failures throw.
  flush(signal: AbortSignal): Promise<number>;
}

type Request = MessageInitShape<typeof ReportResultsRequestSchema>;

// A call the control plane will never accept as it is: invalid, or larger than it takes (its
// size limit answers ResourceExhausted without the retry-after a rate limit sends). Retrying it
// would fail the same way for ever.
export function refusedForGood(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return false;
  if (err.code === Code.InvalidArgument) return true;
  return err.code === Code.ResourceExhausted && !err.metadata.has("retry-after");
}

export function createReporter(deps: ReporterDeps): Reporter {
  const { api, session, journal, autoScans, scanParts, logger } = deps;
  const call = (req: Request, signal: AbortSignal) => session.call((creds) => api.reportResults(req, creds, signal), signal);

  // Sends results or reports, then again those the control plane is still applying (named in
  // incomplete_scans with no part missing), until none is; returns the answers merged.
  const send = async (req: { results?: CommandResult[]; scans?: ScanReport[] }, signal: AbortSignal): Promise<ReportResultsResponse> => {
    let results = req.results ?? [];
    let scans = req.scans ?? [];
    const merged = create(ReportResultsResponseSchema);
    for (let round = 0; round < APPLY_ROUNDS && (results.length > 0 || scans.length > 0); round++) {
      const res = await call({ results, scans }, signal);
      merged.acknowledgedCommandIds.push(...res.acknowledgedCommandIds);
      merged.acknowledgedScanIds.push(...res.acknowledgedScanIds);
      merged.refused.push(...res.refused);
      const applying = new Set(res.incompleteScans.filter((s) => s.missingParts.length === 0).map((s) => s.scanId));
      merged.incompleteScans.push(...res.incompleteScans.filter((s) => s.missingParts.length > 0));
      results = results.filter((r) => applying.has(r.commandId));
      scans = scans.filter((r) => applying.has(r.id));
    }
    // Still being applied after all these calls: the next flush carries on.
    for (const id of [...results.map((r) => r.commandId), ...scans.map((r) => r.id)]) {
      merged.incompleteScans.push(create(IncompleteScanSchema, { scanId: id }));
    }
    return merged;
  };

  // Results in bounded calls; one the control plane calls invalid is isolated, then given up.
  const reportResults = async (batch: CommandResult[], signal: AbortSignal): Promise<number> => {
    let res;
    try {
      res = await send({ results: batch }, signal);
    } catch (err) {
      if (!refusedForGood(err)) throw err;
      // One malformed result must not hold back the others: isolate it, then give it up.
      if (batch.length > 1) {
        let n = 0;
        for (const result of batch) n += await reportResults([result], signal);
        return n;
      }
      logger.error({ commandId: batch[0]!.commandId, reason: describeError(err) }, "control plane cannot accept this result; dropped");
      await journal.settle([], [batch[0]!.commandId]);
      return 0;
    }
    for (const refused of res.refused) {
      logger.warn({ commandId: refused.commandId, reason: refused.reason }, "control plane refused a result; dropped");
    }
    await journal.settle(res.acknowledgedCommandIds, res.refused.map((r) => r.commandId));
    return res.acknowledgedCommandIds.length;
  };

  // A split scan: its result or report goes first and the control plane names the parts it
  // lacks (all of them the first time; none once it has the scan); those parts follow, one per
  // call, then the result or report again.
  type SplitOutcome = { kind: "answered"; res: ReportResultsResponse } | { kind: "refused"; reason: string } | { kind: "incomplete" };
  const sendSplit = async (scanId: string, sendScan: () => Promise<ReportResultsResponse>, signal: AbortSignal): Promise<SplitOutcome> => {
    let parts: ScanPart[] | undefined;
    for (let round = 0; round < SPLIT_ROUNDS; round++) {
      let res;
      try {
        res = await sendScan();
      } catch (err) {
        if (refusedForGood(err)) return { kind: "refused", reason: describeError(err) };
        throw err;
      }
      const incomplete = res.incompleteScans.find((s) => s.scanId === scanId);
      if (!incomplete) return { kind: "answered", res };
      if (incomplete.missingParts.length === 0) return { kind: "incomplete" };
      parts ??= await scanParts.load(scanId);
      if (!parts) return { kind: "refused", reason: "its parts are no longer on this host" };
      const missing = new Set(incomplete.missingParts);
      for (const part of parts.filter((p) => missing.has(p.index))) {
        try {
          await call({ scanParts: [part] }, signal);
        } catch (err) {
          if (refusedForGood(err)) return { kind: "refused", reason: describeError(err) };
          throw err;
        }
      }
    }
    return { kind: "incomplete" };
  };

  const reportSplitResult = async (result: CommandResult, signal: AbortSignal): Promise<number> => {
    const id = result.commandId;
    const outcome = await sendSplit(id, () => send({ results: [result] }, signal), signal);
    if (outcome.kind === "incomplete") {
      logger.warn({ commandId: id }, "scan result still incomplete at the control plane; sent again on the next cycle");
      return 0;
    }
    if (outcome.kind === "refused") {
      // The command must still end: as failed, with why, and without the updates.
      logger.error({ commandId: id, reason: outcome.reason }, "control plane cannot accept this scan's updates; reporting the scan as failed");
      const n = await reportResults([failedScan(result, outcome.reason)], signal);
      await scanParts.remove(id);
      return n;
    }
    const { res } = outcome;
    for (const refused of res.refused) logger.warn({ commandId: refused.commandId, reason: refused.reason }, "control plane refused a result; dropped");
    await journal.settle(res.acknowledgedCommandIds, res.refused.map((r) => r.commandId));
    if (res.acknowledgedCommandIds.includes(id) || res.refused.some((r) => r.commandId === id)) await scanParts.remove(id);
    return res.acknowledgedCommandIds.length;
  };

  const reportScans = async (batch: ScanReport[], signal: AbortSignal): Promise<void> => {
    let res;
    try {
      res = await send({ scans: batch }, signal);
    } catch (err) {
      if (!refusedForGood(err)) throw err;
      if (batch.length > 1) {
        for (const report of batch) await reportScans([report], signal);
        return;
      }
      logger.error({ scanId: batch[0]!.id, reason: describeError(err) }, "control plane cannot accept this scan report; dropped");
      await autoScans.settle([batch[0]!.id]);
      return;
    }
    await autoScans.settle(res.acknowledgedScanIds);
  };

  const reportSplitScan = async (report: ScanReport, signal: AbortSignal): Promise<void> => {
    const outcome = await sendSplit(report.id, () => send({ scans: [report] }, signal), signal);
    if (outcome.kind === "incomplete") {
      logger.warn({ scanId: report.id }, "scan report still incomplete at the control plane; sent again on the next cycle");
      return;
    }
    if (outcome.kind === "refused") {
      logger.error({ scanId: report.id, reason: outcome.reason }, "control plane cannot accept this scan report; dropped");
      await autoScans.settle([report.id]);
      await scanParts.remove(report.id);
      return;
    }
    await autoScans.settle(outcome.res.acknowledgedScanIds);
    if (outcome.res.acknowledgedScanIds.includes(report.id)) await scanParts.remove(report.id);
  };

  return {
    async flush(signal) {
      let reported = 0;
      const pending = journal.pending();
      for (const result of pending.filter(isSplitResult)) reported += await reportSplitResult(result, signal);
      for (const batch of batches(pending.filter((r) => !isSplitResult(r)), BATCH_RESULTS, resultSize)) {
        reported += await reportResults(batch, signal);
      }
      // Scan reports in the order they were made, so each replaces the view before the next.
      let whole: ScanReport[] = [];
      const sendWhole = async () => {
        for (const chunk of batches(whole, BATCH_SCANS, scanSize)) await reportScans(chunk, signal);
        whole = [];
      };
      for (const report of autoScans.pending()) {
        if ((report.result?.updateParts ?? 0) > 0) {
          await sendWhole();
          await reportSplitScan(report, signal);
        } else whole.push(report);
      }
      await sendWhole();
      return reported;
    },
  };
}

const isSplitResult = (r: CommandResult) => r.detail.case === "scanUpdates" && r.detail.value.updateParts > 0;

// The bytes and the entries (updates, install package results) a result adds to a call.
function resultSize(result: CommandResult): { bytes: number; entries: number } {
  const d = result.detail;
  const entries =
    d.case === "scanUpdates"
      ? d.value.updates.length
      : d.case === "installUpdates" || d.case === "confirmDependencies" || d.case === "rollbackUpdate"
        ? d.value.packages.length
        : d.case === "listPackageVersions"
          ? d.value.packages.reduce((n, p) => n + 1 + p.versions.length, 0)
          : 0;
  return { bytes: toBinary(CommandResultSchema, result).length, entries };
}

function scanSize(report: ScanReport): { bytes: number; entries: number } {
  return { bytes: toBinary(ScanReportSchema, report).length, entries: report.result?.updates.length ?? 0 };
}

// Consecutive items in calls of at most `count` items, BATCH_BYTES and BATCH_ENTRIES; an item
// bigger than that on its own goes alone.
function* batches<T>(items: T[], count: number, size: (item: T) => { bytes: number; entries: number }): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  let entries = 0;
  for (const item of items) {
    const s = size(item);
    if (batch.length > 0 && (batch.length >= count || bytes + s.bytes > BATCH_BYTES || entries + s.entries > BATCH_ENTRIES)) {
      yield batch;
      batch = [];
      bytes = 0;
      entries = 0;
    }
    batch.push(item);
    bytes += s.bytes;
    entries += s.entries;
  }
  if (batch.length > 0) yield batch;
}

// A split scan the control plane will not take: reported as failed, with its readings and
// subsystems but none of its updates.
function failedScan(result: CommandResult, reason: string): CommandResult {
  const scan = result.detail.value as ScanUpdatesResult;
  const found = scan.subsystems.reduce((n, s) => n + s.updateCount, 0);
  return create(CommandResultSchema, {
    commandId: result.commandId,
    outcome: CommandOutcome.FAILED,
    message: `the control plane did not accept the ${plural(found, "update")} this scan found: ${reason}`,
    startTime: result.startTime,
    finishTime: result.finishTime,
    sequence: result.sequence,
    detail: {
      case: "scanUpdates",
      value: { subsystems: scan.subsystems, systemMetrics: scan.systemMetrics, storageMetrics: scan.storageMetrics },
    },
  });
}
