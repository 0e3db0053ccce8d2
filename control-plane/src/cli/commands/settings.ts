import { plural } from "@redflag/common/plural";
import { ListSettingChangesResponseSchema, ListSettingsResponseSchema } from "@redflag/gen/settings_service_pb";
import type { Command } from "commander";
import { readFile } from "node:fs/promises";
import { CliError, type CliContext } from "../context.ts";
import { table, time } from "../output.ts";

// redflag settings: operational settings (admins change them).
export function registerSettings(program: Command, cli: CliContext): void {
  const settings = program.command("settings").description("operational settings (admins change them)");

  settings
    .command("list")
    .action(async () => {
      const res = await (await cli.clients()).settings.listSettings({});
      if (cli.json()) return cli.printJson(ListSettingsResponseSchema, res);
      cli.out(
        table(
          ["KEY", "VALUE", "DEFAULT", "RANGE", "CHANGED BY", "DESCRIPTION"],
          res.settings.map((x) => [x.key, x.value || "(empty)", x.isDefault ? "yes" : x.defaultValue, x.min || x.max ? `${x.min}..${x.max}` : "", x.updatedBy, x.description]),
        ),
      );
    });

  settings
    .command("set")
    .description("change settings: key=value … (an empty value restores the default)")
    .argument("<key=value...>", "for example poll_interval=2m retention_audit=2y")
    .action(async (pairs: string[]) => {
      const values: Record<string, string> = {};
      for (const pair of pairs) {
        const eq = pair.indexOf("=");
        if (eq <= 0) throw new CliError(`"${pair}" is not key=value`);
        values[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
      await (await cli.clients()).settings.updateSettings({ values });
      cli.out(`updated ${Object.keys(values).join(", ")}\n`);
    });

  settings
    .command("history")
    .option("--key <key>", "only this setting")
    .action(async (o: { key?: string }) => {
      const res = await (await cli.clients()).settings.listSettingChanges({ key: o.key ?? "", pageSize: 200 });
      if (cli.json()) return cli.printJson(ListSettingChangesResponseSchema, res);
      cli.out(table(["TIME", "KEY", "FROM", "TO", "BY"], res.changes.map((c) => [time(c.changeTime)!.toISOString(), c.key, c.before || "(default)", c.after || "(default)", c.changedBy])));
    });

  settings
    .command("export")
    .description("print the changed settings as JSON")
    .action(async () => {
      cli.out(`${(await (await cli.clients()).settings.exportSettings({})).json}\n`);
    });

  settings
    .command("import")
    .description("apply settings exported as JSON")
    .argument("<file>", "JSON file, or - for stdin")
    .action(async (file: string) => {
      let text = "";
      if (file === "-") for await (const chunk of cli.io.stdin) text += chunk;
      else text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
        throw new CliError(`cannot read ${file}: ${err.code ?? err.message}`);
      });
      const res = await (await cli.clients()).settings.importSettings({ json: text });
      cli.out(`imported: ${plural(res.changed, "setting")} changed\n`);
    });
}
