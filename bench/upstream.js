// A minimal MCP Streamable HTTP server for load benchmarks. It replies to every message at
// once with a small JSON body, keeps no state and issues no session id.
//
// Usage: node bench/upstream.js [PORT]   (PORT 0, the default, picks a free port)
// Prints `upstream: listening on http://127.0.0.1:PORT/mcp` when ready. Listens on 127.0.0.1
// only.

'use strict';

const http = require('node:http');

const MCP_PATH = '/mcp';
const MAX_BODY_BYTES = 1024 * 1024;

const TOOLS = [
  {
    name: 'search.web',
    description: 'Returns a fixed search result.',
    inputSchema: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] },
  },
  {
    name: 'calendar.create_event',
    description: 'Returns a fixed event.',
    inputSchema: { type: 'object', properties: { title: { type: 'string' }, start: { type: 'string' } } },
  },
];

const TOOL_RESULTS = {
  'search.web': { content: [{ type: 'text', text: 'result 1: https://example.test/1' }], isError: false },
  'calendar.create_event': { content: [{ type: 'text', text: 'created event ev-1' }], isError: false },
};

function send(response, status, body) {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

function result(id, value) {
  return { jsonrpc: '2.0', id, result: value };
}

function error(id, code, message) {
  return { jsonrpc: '2.0', id, error: { code, message } };
}

// Returns the HTTP status and JSON-RPC reply for one message, or a null body for HTTP 202.
function answer(message) {
  const id = message.id ?? null;
  const params = message.params ?? {};
  switch (message.method) {
    case 'initialize':
      return [200, result(id, {
        protocolVersion: params.protocolVersion ?? '2025-06-18',
        capabilities: { tools: { listChanged: false } },
        serverInfo: { name: 'bench-upstream', version: '0.1.0' },
      })];
    case 'notifications/initialized':
      return [202, null];
    case 'ping':
      return [200, result(id, {})];
    case 'tools/list':
      return [200, result(id, { tools: TOOLS })];
    case 'tools/call': {
      const toolResult = TOOL_RESULTS[params.name];
      if (toolResult === undefined) {
        return [200, error(id, -32602, `unknown tool \`${params.name}\``)];
      }
      return [200, result(id, toolResult)];
    }
    default:
      if (message.id === undefined) {
        return [202, null];
      }
      return [200, error(id, -32601, `method \`${message.method}\` is not supported`)];
  }
}

function handle(request, response) {
  if (request.method !== 'POST' || request.url !== MCP_PATH) {
    send(response, 405, error(null, -32600, `use POST ${MCP_PATH}`));
    return;
  }

  const chunks = [];
  let received = 0;
  request.on('data', (chunk) => {
    received += chunk.length;
    if (received > MAX_BODY_BYTES) {
      send(response, 413, error(null, -32600, `request body exceeds ${MAX_BODY_BYTES} bytes`));
      request.destroy();
      return;
    }
    chunks.push(chunk);
  });
  request.on('end', () => {
    let message;
    try {
      message = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (parseError) {
      send(response, 400, error(null, -32700, `invalid JSON: ${parseError.message}`));
      return;
    }
    const [status, body] = answer(message);
    if (body === null) {
      response.writeHead(status, { 'content-length': 0 });
      response.end();
      return;
    }
    send(response, status, body);
  });
}

const port = Number(process.argv[2] ?? 0);
const server = http.createServer({ noDelay: true }, handle);
// The gateway's HTTP client keeps idle connections for 90 s. Node's default of 5 s would close
// them between benchmark phases and race with their reuse.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  console.log(`upstream: listening on http://127.0.0.1:${bound}${MCP_PATH}`);
});

// The server keeps no state, so it exits without waiting for open connections.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
