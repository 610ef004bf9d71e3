import { serve } from '../src/index.js';

/** The README example: a function and a class backend behind two endpoints. */
function hello(request: Request) {
  const name = new URL(request.url).searchParams.get('name') ?? 'world';
  return `hello ${name}`;
}

class Counter {
  private count = 0;
  constructor(private readonly step: number) {}
  call() {
    this.count += this.step;
    return { count: this.count };
  }
}

const client = await serve.start();
await client.createBackend('hello', hello, { config: { numReplicas: 2 }, replicaOptions: { numCpus: 0.5 } });
await client.createEndpoint('hello', { backend: 'hello', route: '/hello' });
await client.createBackend('counter', Counter, { initArgs: [1], replicaOptions: { numCpus: 0.5 } });
await client.createEndpoint('counter', { backend: 'counter', route: '/counter', methods: ['GET', 'POST'] });

process.stdout.write(
  [
    `Flotilla is serving on ${client.httpUrl}`,
    `  curl '${client.httpUrl}/hello?name=flotilla'`,
    `  curl -X POST ${client.httpUrl}/counter`,
    `  curl ${client.httpUrl}/-/routes`,
    'Ctrl-C stops it and removes its containers.',
    '',
  ].join('\n'),
);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    void client.shutdown().then(() => process.exit(0));
  });
}
