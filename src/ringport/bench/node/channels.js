// Node.js side of ringport.bench's channel benchmark (10).
// Usage: node channels.js '{"case": "new"|"memory", "n": N}'
// new: microseconds per `new MessageChannel()` made and dropped, n in a row.
// memory: growth of process RSS per live, unused MessageChannel, n alive at once (KiB).
'use strict';
const { MessageChannel } = require('worker_threads');

function main(p) {
  const n = p.n;
  if (p.case === 'new') {
    new MessageChannel();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) new MessageChannel();
    const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
    console.log(JSON.stringify({ value: us, n, verified: true }));
    return;
  }
  const before = process.memoryUsage().rss;
  const keep = [];
  for (let i = 0; i < n; i++) keep.push(new MessageChannel());
  const grown = process.memoryUsage().rss - before;
  for (const c of keep) { c.port1.close(); c.port2.close(); }
  console.log(JSON.stringify({ value: grown / n / 1024, n: keep.length, verified: true }));
}

main(JSON.parse(process.argv[2] || '{}'));
