import { createServer } from 'node:http';
import { listenOnSocket } from './ready.js';

/** The baseline for the replica runtime: node:http answering the same bytes as a replica whose handler returns 'hello'. */
const reply = Buffer.from('hello');
const server = createServer({ keepAliveTimeout: 65_000 }, (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': reply.length });
  res.end(reply);
});
listenOnSocket(server, process.argv[2]);
