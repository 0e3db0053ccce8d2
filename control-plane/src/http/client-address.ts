import net from "node:net";
import type { Cidr } from "../config.ts";

// The address a request comes from, for rate limits, sign-in throttling, the audit, security
// events and logs. Behind a reverse proxy every connection comes from the proxy, so with
// REDFLAG_TRUSTED_PROXIES set, a connection from one of those addresses is believed about the
// hops it appends to X-Forwarded-For: the client is the right-most hop that is not itself a
// trusted proxy. A connection from anywhere else is never believed: its X-Forwarded-For is
// ignored, so nobody can pick the address they are counted under.

// The most hops of X-Forwarded-For looked at, from the right: a real chain of proxies is short.
const MAX_HOPS = 16;

export type ClientAddress = (socketAddress: string | undefined, forwardedFor: string | string[] | undefined) => string;

export function createClientAddress(trusted: readonly Cidr[]): ClientAddress {
  if (trusted.length === 0) return (socketAddress) => plain(socketAddress ?? "") ?? socketAddress ?? "";
  const list = new net.BlockList();
  for (const c of trusted) list.addSubnet(c.address, c.prefix, c.family);
  const isTrusted = (address: string) => list.check(address, net.isIPv6(address) ? "ipv6" : "ipv4");

  return (socketAddress, forwardedFor) => {
    const peer = plain(socketAddress ?? "");
    if (peer === undefined) return socketAddress ?? "";
    if (!isTrusted(peer) || forwardedFor === undefined) return peer;
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor).split(",").slice(-MAX_HOPS);
    let client = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = plain(hops[i]!.trim());
      // Garbage where a trusted proxy should have written an address: stop at the last good hop.
      if (hop === undefined) break;
      client = hop;
      if (!isTrusted(hop)) break;
    }
    return client;
  };
}

// An IP address as it is written in a socket or a proxy header ("::ffff:10.0.0.1",
// "[2001:db8::1]:443", "10.0.0.1:5000"), as a plain address; undefined when it is not one.
function plain(text: string): string | undefined {
  let address = text;
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(address);
  if (bracketed) address = bracketed[1]!;
  else if (/^[\d.]+:\d{1,5}$/.test(address)) address = address.slice(0, address.lastIndexOf(":"));
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) address = mapped[1]!;
  return net.isIP(address) ? address.toLowerCase() : undefined;
}
