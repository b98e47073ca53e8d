// Node.js side of ringport.bench's worker start-up and memory benchmark (7).
// Usage: node workers.js '{"case": "startup"|"memory", "n": N}'
// startup: ms from new Worker() to its first message, N workers one after another (median).
// memory: growth of process RSS per worker with N idle workers alive.
'use strict';
const { Worker, isMainThread, parentPort } = require('worker_threads');

const SRC = "const { parentPort } = require('worker_threads'); parentPort.on('message', () => {}); parentPort.postMessage('ready');";

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main(p) {
  const ws = [], times = [];
  const before = process.memoryUsage().rss;
  for (let i = 0; i < p.n; i++) {
    const t0 = process.hrtime.bigint();
    const w = new Worker(SRC, { eval: true });
    const m = await new Promise((res) => w.once('message', res));
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (m !== 'ready') throw new Error('worker did not say ready');
    ws.push(w);
  }
  const grown = process.memoryUsage().rss - before;
  await Promise.all(ws.map((w) => w.terminate()));
  const out = p.case === 'startup'
    ? { value: median(times), n: p.n, samples: times, verified: true }
    : { value: grown / p.n / 2 ** 20, n: p.n, verified: true };
  console.log(JSON.stringify(out));
}

if (isMainThread) main(JSON.parse(process.argv[2] || '{}'));
