// Node.js side of ringport.bench's scaling benchmark (8): the lattice count of
// ringport/bench/peers.py grid_rows, rows dealt round-robin to k workers.
// Usage: node scaling.js '{"k": K, "g": G}'  ->  {"value": seconds, "n": G*G, "verified"}
'use strict';
const { Worker, isMainThread, parentPort } = require('worker_threads');

function gridRows(w, k, g) {
  const g2 = g * g;
  let c = 0;
  for (let x = w; x < g; x += k) {
    const x2 = x * x;
    for (let y = 0; y < g; y++) if (x2 + y * y < g2) c++;
  }
  return c;
}

function exact(g) {
  let s = 0;
  for (let x = 0; x < g; x++) {
    let r = Math.floor(Math.sqrt(g * g - x * x - 1));
    while (r * r > g * g - x * x - 1) r--;
    while ((r + 1) * (r + 1) <= g * g - x * x - 1) r++;
    s += r + 1;
  }
  return s;
}

function main(p) {
  const ws = [];
  let ready = 0, got = 0, total = 0, t0 = 0;
  for (let w = 0; w < p.k; w++) {
    const wk = new Worker(__filename);
    wk.on('message', (m) => {
      if (m === 'ready') {
        if (++ready === p.k) {
          t0 = Number(process.hrtime.bigint());
          ws.forEach((x, i) => x.postMessage([i, p.k, p.g]));
        }
        return;
      }
      total += m;
      if (++got < p.k) return;
      const dt = (Number(process.hrtime.bigint()) - t0) / 1e9;
      console.log(JSON.stringify({ value: dt, n: p.g * p.g, verified: total === exact(p.g) }));
      ws.forEach((x) => x.terminate());
    });
    ws.push(wk);
  }
}

if (isMainThread) main(JSON.parse(process.argv[2] || '{}'));
else {
  parentPort.on('message', ([w, k, g]) => parentPort.postMessage(gridRows(w, k, g)));
  parentPort.postMessage('ready');
}
