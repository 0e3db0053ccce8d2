import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

// Fake package tools for scanner and installer tests: shell scripts in a directory that is the
// whole PATH (plus /usr/bin:/bin when a script needs coreutils). Each script logs its argv,
// one argument per line, ended by "@@end", so tests can assert exactly what ran.
export interface FakeTools {
  dir: string;
  env(extraPath?: boolean): NodeJS.ProcessEnv;
  // Every run of `tool` as its argv (without the tool name), oldest first.
  calls(tool: string): Promise<string[][]>;
  // A file the scripts can read (recorded output) or check (markers).
  file(name: string): string;
  write(name: string, content: string): Promise<void>;
}

export async function fakeTools(prefix: string, scripts: Record<string, string>, files: Record<string, string> = {}): Promise<FakeTools> {
  const dir = await mkdtemp(path.join(tmpdir(), `redflag-fake-${prefix}-`));
  const bin = path.join(dir, "bin");
  await mkdir(bin);
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, name), content);
  for (const [tool, body] of Object.entries(scripts)) {
    const log = `for a in "$@"; do printf '%s\\n' "$a"; done >> "${dir}/${tool}.argv"; echo "@@end" >> "${dir}/${tool}.argv"`;
    await writeFile(path.join(bin, tool), `#!/bin/sh\nD='${dir}'\n${log}\n${body}\n`);
    await chmod(path.join(bin, tool), 0o755);
  }
  return {
    dir,
    env: (extraPath = false) => ({ PATH: extraPath ? `${bin}:/usr/bin:/bin` : bin }),
    async calls(tool) {
      const text = await readFile(path.join(dir, `${tool}.argv`), "utf8").catch(() => "");
      return text
        .split("@@end\n")
        .filter((chunk, i, all) => i < all.length - 1 || chunk !== "")
        .map((chunk) => chunk.split("\n").filter((_, i, lines) => i < lines.length - 1));
    },
    file: (name) => path.join(dir, name),
    write: (name, content) => writeFile(path.join(dir, name), content),
  };
}

export async function removeFakeTools(...tools: (FakeTools | undefined)[]): Promise<void> {
  for (const t of tools) if (t) await rm(t.dir, { recursive: true, force: true });
}

// A shell snippet that prints a file line by line with builtins only (no cat on PATH).
export const printFile = (name: string) => `while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "$D/${name}"`;
