import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { type ConnectRouter } from "@connectrpc/connect";
import {
  MaintenanceService,
  type PreviewWindowRequest,
  type RebootPolicy,
  RebootPolicySchema,
  type RebootPolicySpec,
  type UpdateRebootPolicyRequest,
  type UpdateWindowRequest,
  type Window,
  WindowOccurrenceSchema,
  WindowSchema,
  type WindowSpec,
} from "@redflag/gen/maintenance_service_pb";
import { checkRebootPolicySpec, checkWindowSpec, notFound, rebootPolicyNameTaken, windowNameTaken } from "./server-rules.ts";

// An in-memory MaintenanceService like the control plane's for what the Windows page uses: it
// keeps windows, refuses an unknown time zone, a definition without targets or a name another
// window has, with the control plane's codes and messages (services/maintenance-service.ts,
// domain/windows.ts), and answers previews with the Berlin spring-forward weekend. It keeps
// reboot policies the same way (domain/reboot-policies.ts): a hook that is not a name, a time
// limit out of bounds, no targets or a name another policy has are refused, and a refusal
// changes nothing.
export function maintenanceServer(initial: Window[] = [], initialRebootPolicies: RebootPolicy[] = []) {
  const windows = [...initial];
  const created: WindowSpec[] = [];
  const updates: UpdateWindowRequest[] = [];
  const previews: PreviewWindowRequest[] = [];
  const rebootPolicies = [...initialRebootPolicies];
  const createdRebootPolicies: RebootPolicySpec[] = [];
  const rebootPolicyUpdates: UpdateRebootPolicyRequest[] = [];
  let n = 0;
  // The control plane fills in the limits a definition leaves unset.
  const storedPolicy = (spec: RebootPolicySpec): RebootPolicySpec => ({
    ...spec,
    name: spec.name.trim(),
    hookTimeout: spec.hookTimeout ?? create(DurationSchema, { seconds: 300n }),
    returnTimeout: spec.returnTimeout ?? create(DurationSchema, { seconds: 900n }),
  });
  // The control plane stores dtstart with its seconds.
  const stored = (spec: WindowSpec): WindowSpec => ({ ...spec, dtstart: spec.dtstart.length === 16 ? `${spec.dtstart}:00` : spec.dtstart });
  const routes = (router: ConnectRouter) =>
    router.service(MaintenanceService, {
      listWindows: () => ({ windows }),
      // The page's reboot policies (RebootPolicies.svelte, tested in reboot-policies.test.ts).
      listRebootPolicies: () => ({ policies: rebootPolicies }),
      createRebootPolicy(req) {
        checkRebootPolicySpec(req.policy!);
        if (rebootPolicies.some((p) => p.spec?.name === req.policy!.name.trim())) throw rebootPolicyNameTaken(req.policy!.name.trim());
        createdRebootPolicies.push(req.policy!);
        const p = create(RebootPolicySchema, { id: `00000000-0000-4000-9000-00000000000${++n}`, spec: storedPolicy(req.policy!), createdBy: "olu" });
        rebootPolicies.push(p);
        return { policy: p };
      },
      updateRebootPolicy(req) {
        rebootPolicyUpdates.push(req);
        checkRebootPolicySpec(req.policy!);
        const p = rebootPolicies.find((x) => x.id === req.id);
        if (!p) throw notFound("reboot policy", req.id);
        if (rebootPolicies.some((x) => x.id !== req.id && x.spec?.name === req.policy!.name.trim())) throw rebootPolicyNameTaken(req.policy!.name.trim());
        const saved = create(RebootPolicySchema, { id: p.id, spec: storedPolicy(req.policy!), createdBy: p.createdBy, createTime: p.createTime });
        rebootPolicies.splice(rebootPolicies.indexOf(p), 1, saved);
        return { policy: saved };
      },
      deleteRebootPolicy(req) {
        const i = rebootPolicies.findIndex((p) => p.id === req.id);
        if (i < 0) throw notFound("reboot policy", req.id);
        rebootPolicies.splice(i, 1);
        return {};
      },
      createWindow(req) {
        checkWindowSpec(req.window!);
        if (windows.some((w) => w.spec?.name === req.window!.name.trim())) throw windowNameTaken(req.window!.name.trim());
        created.push(req.window!);
        const w = create(WindowSchema, { id: `00000000-0000-4000-8000-00000000000${++n}`, spec: stored(req.window!) });
        windows.push(w);
        return { window: w };
      },
      updateWindow(req) {
        updates.push(req);
        checkWindowSpec(req.window!);
        const w = windows.find((x) => x.id === req.id);
        if (!w) throw notFound("window", req.id);
        if (windows.some((x) => x.id !== req.id && x.spec?.name === req.window!.name.trim())) throw windowNameTaken(req.window!.name.trim());
        const saved = create(WindowSchema, { id: w.id, spec: stored(req.window!), createdBy: w.createdBy, nextStartTime: w.nextStartTime });
        windows.splice(windows.indexOf(w), 1, saved);
        return { window: saved };
      },
      deleteWindow(req) {
        const i = windows.findIndex((w) => w.id === req.id);
        if (i < 0) throw notFound("window", req.id);
        windows.splice(i, 1);
        return {};
      },
      previewWindow(req) {
        previews.push(req);
        if (req.window.case === "spec") checkWindowSpec({ timeZone: req.window.value.timeZone, targets: { allAgents: true, groups: [], tags: [], agentIds: [] } });
        return {
          occurrences: [
            create(WindowOccurrenceSchema, { localStart: "2026-03-28T22:00:00+01:00", localEnd: "2026-03-29T03:00:00+02:00" }),
            create(WindowOccurrenceSchema, { localStart: "2026-04-04T22:00:00+02:00", localEnd: "2026-04-05T02:00:00+02:00" }),
          ],
        };
      },
    });
  return { routes, windows, created, updates, previews, rebootPolicies, createdRebootPolicies, rebootPolicyUpdates };
}
