import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigError, defaultStateDir, loadConfig } from "./config.ts";
import { main } from "./main.ts";

describe("the default state directory", () => {
  it("is the usual place for a system service's data on each OS", () => {
    expect(loadConfig({}, {}, "/", "linux").stateDir).toBe("/var/lib/redflag-agent");
    expect(loadConfig({}, {}, "/", "darwin").stateDir).toBe("/Library/Application Support/RedFlag/agent");
    expect(loadConfig({ ProgramData: "C:\\ProgramData" }, {}, "C:\\", "win32").stateDir).toBe("C:\\ProgramData\\RedFlag\\agent");
    expect(loadConfig({ ProgramData: "D:\\Data\\" }, {}, "C:\\", "win32").stateDir).toBe("D:\\Data\\RedFlag\\agent");
  });

  it("on Windows falls back to C:\\ProgramData when %ProgramData% is missing or not an absolute path", () => {
    expect(defaultStateDir({}, "win32")).toBe("C:\\ProgramData\\RedFlag\\agent");
    expect(defaultStateDir({ ProgramData: "..\\elsewhere" }, "win32")).toBe("C:\\ProgramData\\RedFlag\\agent");
  });

  it("gives way to --state-dir and REDFLAG_AGENT_STATE_DIR, resolved with the OS's own path rules", () => {
    expect(loadConfig({ REDFLAG_AGENT_STATE_DIR: "state" }, {}, "C:\\Users\\admin", "win32").stateDir).toBe("C:\\Users\\admin\\state");
    expect(loadConfig({ REDFLAG_AGENT_STATE_DIR: "E:\\agent" }, { stateDir: "F:\\agent" }, "C:\\", "win32").stateDir).toBe("F:\\agent");
    expect(loadConfig({ REDFLAG_AGENT_STATE_DIR: "state" }, {}, "/srv", "darwin").stateDir).toBe("/srv/state");
    expect(() => loadConfig({ REDFLAG_AGENT_LOG_LEVEL: "loud" }, {}, "C:\\", "win32")).toThrow(ConfigError);
  });
});

describe("help texts", () => {
  afterEach(() => vi.restoreAllMocks());
  const help = async (argv: string[], platform: NodeJS.Platform, env: NodeJS.ProcessEnv = {}) => {
    let out = "";
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => ((out += String(chunk)), true));
    expect(await main(argv, env, platform)).toBe(0);
    return out;
  };

  it("show the default state directory of the OS the agent runs on", async () => {
    expect(await help(["--help"], "linux")).toContain("REDFLAG_AGENT_STATE_DIR (default /var/lib/redflag-agent)");
    expect(await help(["run", "--help"], "darwin")).toMatch(/--state-dir <dir>\s+state directory \(default \/Library\/Application\s+Support\/RedFlag\/agent\)/);
    const windows = await help(["--help"], "win32", { ProgramData: "C:\\ProgramData" });
    expect(windows).toContain("REDFLAG_AGENT_STATE_DIR (default C:\\ProgramData\\RedFlag\\agent)");
    expect(await help(["register", "--help"], "win32", { ProgramData: "C:\\ProgramData" })).toMatch(/state directory \(default\s+C:\\ProgramData\\RedFlag\\agent\)/);
  });
});
