// Node.js side of ringport.bench's shared-memory benchmarks (5, 6).
// Usage: node shared.js '{"case": "add", "n": N}'        two workers, Atomics.add on one Int32
//        node shared.js '{"case": "waitnotify", "n": R}'  two workers alternate with wait/notify
// Workers start, say ready, then wait on a start flag so both begin together; the clock runs
// from the flag to the last worker's end (process.hrtime is one clock for all threads).
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

function peer({ p, me, ctl, cell }) {
  const c = new Int32Array(ctl), a = new Int32Array(cell);
  parentPort.postMessage('ready');
  Atomics.wait(c, 0, 0);
  const lat = [];
  if (p.case === 'add') {
    for (let i = 0; i < p.n; i++) Atomics.add(a, 0, 1);
  } else {
    let t = process.hrtime.bigint();
    for (let i = 0; i < p.n; i++) {
      const want = 2 * i + me;
      for (;;) {
        const v = Atomics.load(a, 0);
        if (v === want) break;
        Atomics.wait(a, 0, v, 5000);
      }
      if (me === 0) { const t2 = process.hrtime.bigint(); if (i) lat.push(Number(t2 - t) / 1e3); t = t2; }
      Atomics.store(a, 0, want + 1);
      Atomics.notify(a, 0);
    }
  }
  parentPort.postMessage({ end: Number(process.hrtime.bigint()), lat });
}

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function main(p) {
  const ctl = new SharedArrayBuffer(4), cell = new SharedArrayBuffer(4);
  const c = new Int32Array(ctl), a = new Int32Array(cell);
  const ws = [0, 1].map((me) => new Worker(__filename, { workerData: { p, me, ctl, cell } }));
  let ready = 0, t0 = 0;
  const ends = [], lats = [];
  ws.forEach((w) => w.on('message', (m) => {
    if (m === 'ready') {
      if (++ready === 2) { t0 = Number(process.hrtime.bigint()); Atomics.store(c, 0, 1); Atomics.notify(c, 0); }
      return;
    }
    ends.push(m.end); lats.push(...m.lat);
    if (ends.length < 2) return;
    const dt = (Math.max(...ends) - t0) / 1e9;
    const got = Atomics.load(a, 0);
    let out;
    if (p.case === 'add') out = { value: 2 * p.n / dt / 1e6, n: 2 * p.n, verified: got === 2 * p.n };
    else out = { value: median(lats), mean: dt / p.n * 1e6, n: p.n, samples: lats, verified: got === 2 * p.n };
    console.log(JSON.stringify(out));
    ws.forEach((x) => x.terminate());
  }));
}

if (isMainThread) main(JSON.parse(process.argv[2] || '{}'));
else peer(workerData);
