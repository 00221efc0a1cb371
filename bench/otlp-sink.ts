// An OTLP/HTTP endpoint that reads and drops what it receives, standing in
// for a collector in the telemetry benchmark. Prints "ready" when listening.
import * as http from "node:http";

let requests = 0;
const server = http.createServer((req, res) => {
  let bytes = 0;
  req.on("data", (chunk: Buffer) => (bytes += chunk.length));
  req.on("end", () => {
    requests += bytes > 0 ? 1 : 0;
    res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
  });
});
server.listen(Number(process.env.SINK_PORT), "127.0.0.1", () => process.stdout.write("ready\n"));
process.on("SIGTERM", () => {
  process.stderr.write(`otlp sink: ${requests} export requests\n`);
  server.close(() => process.exit(0));
});
