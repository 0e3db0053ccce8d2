import { Readable, Writable } from "node:stream";
import { main } from "../../src/cli/main.ts";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

// Runs the redflag CLI in this process: `env` is all the environment it sees, `input` its
// standard input (not a terminal), and what it writes is collected.
export async function runInProcess(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const sink = (append: (text: string) => void) =>
    new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        append(chunk.toString());
        done();
      },
    });
  const code = await main(args, opts.env ?? {}, {
    stdin: Readable.from(opts.input === undefined ? [] : [opts.input]),
    stdout: sink((text) => (stdout += text)),
    stderr: sink((text) => (stderr += text)),
  });
  return { code, stdout, stderr };
}
