import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { errorInterceptor } from "./interceptors.ts";

describe("errorInterceptor", () => {
  const call = (thrown: unknown) => {
    const method = FleetService.method.getAgent;
    const req = { method, service: FleetService, header: new Headers(), contextValues: createContextValues(), stream: false, url: "", requestMethod: "POST", message: {} };
    const next = () => Promise.reject(thrown);
    return errorInterceptor(pino({ level: "silent" }))(next as never)(req as never);
  };

  // gRPC percent-encodes the message and connect's encoder throws on an unpaired surrogate
  // (rpc-parse-errors.ts): a handler quoting the request's text keeps its code and its message.
  it("makes a message quoting an unpaired surrogate well-formed, keeping the code", async () => {
    const err = await call(new ConnectError("agent \ud800 not found", Code.NotFound)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.NotFound);
    expect((err as ConnectError).rawMessage).toBe("agent \ufffd not found");
    expect(encodeURIComponent((err as ConnectError).rawMessage)).toContain("%EF%BF%BD");
  });
});
