// Start the reference MCP server @modelcontextprotocol/server-everything in
// Streamable HTTP mode, bound to a loopback address only.
//
// Usage: PORT=38080 node infra/test-deps/serve-everything.mjs
//
// Environment:
//   PORT   TCP port to listen on. 0 picks a free port. Default: 3001, the
//          upstream default.
//   HOST   Loopback address to bind (127.0.0.0/8, ::1 or localhost).
//          Default: 127.0.0.1. Any other address is rejected.
//   GZIP_ALLOWED_DOMAINS  Domains that the gzip-file-as-resource tool may
//          fetch from. Default here: 127.0.0.1,localhost, so no tool call can
//          reach another host. data: URIs work regardless.
//
// The MCP endpoint is http://HOST:PORT/mcp (POST, GET and DELETE). Once the
// socket is bound, this script prints one line to stderr:
//   serve-everything: listening on http://127.0.0.1:38080/mcp
// The upstream server also prints "MCP Streamable HTTP Server listening on
// port N" to stderr, but N is the PORT variable as given, so it reads 0 when
// PORT=0. Use the line above to learn the real port.
//
// Why a wrapper: server-everything 2026.8.31 calls `app.listen(PORT)` without
// a host (dist/transports/streamableHttp.js), so Node binds every interface.
// This script adds the host to every listen() call that lacks one before it
// loads the server.

import net from "node:net";
import process from "node:process";

const DEFAULT_HOST = "127.0.0.1";

function isLoopback(host) {
  if (host === "localhost" || host === "::1") {
    return true;
  }
  return net.isIPv4(host) && host.startsWith("127.");
}

const host = process.env.HOST || DEFAULT_HOST;
if (!isLoopback(host)) {
  console.error(
    `serve-everything: invalid HOST ${JSON.stringify(host)}: ` +
      "only loopback addresses are allowed (127.0.0.0/8, ::1, localhost)",
  );
  process.exit(2);
}
process.env.GZIP_ALLOWED_DOMAINS ??= "127.0.0.1,localhost";

const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const [first, second] = args;
  const isPort = typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first));

  if (isPort && typeof second !== "string") {
    // listen(port[, backlog][, callback]) without a host.
    args.splice(1, 0, host);
  } else if (first !== null && typeof first === "object" && first.path === undefined && first.host === undefined) {
    // listen({ port }) without a host.
    args[0] = { ...first, host };
  }

  this.once("listening", () => {
    const address = this.address();
    if (address !== null && typeof address === "object") {
      const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
      console.error(`serve-everything: listening on http://${shownHost}:${address.port}/mcp`);
    }
  });
  return originalListen.apply(this, args);
};

// The upstream launcher picks its transport from argv[2].
process.argv.splice(2, process.argv.length - 2, "streamableHttp");
await import(
  new URL("./node_modules/@modelcontextprotocol/server-everything/dist/index.js", import.meta.url).href
);
