import { createInterface } from "node:readline";
import { CliError, type CliIo } from "./context.ts";

// A password from stdin (--password-stdin, for scripts) or typed at a terminal without echo.
export async function readSecret(io: CliIo, prompt: string, fromStdin: boolean | undefined): Promise<string> {
  if (fromStdin) {
    let data = "";
    for await (const chunk of io.stdin) data += chunk;
    return data.replace(/\r?\n$/, "");
  }
  if (!io.stdin.isTTY) throw new CliError("no terminal to type a password on: pass --password-stdin and pipe it in");
  const rl = createInterface({ input: io.stdin, output: io.stderr, terminal: true });
  const out = rl as unknown as { _writeToOutput?: (s: string) => void };
  io.stderr.write(prompt);
  out._writeToOutput = () => {};
  try {
    return await new Promise<string>((resolve) => rl.question("", resolve));
  } finally {
    rl.close();
    io.stderr.write("\n");
  }
}

// A line typed at the terminal; without one, the prompt names what is missing.
export async function ask(io: CliIo, prompt: string): Promise<string> {
  if (!io.stdin.isTTY) throw new CliError(`${prompt.replace(/: $/, "")} is required`);
  const rl = createInterface({ input: io.stdin, output: io.stderr });
  try {
    return (await new Promise<string>((resolve) => rl.question(prompt, resolve))).trim();
  } finally {
    rl.close();
  }
}
