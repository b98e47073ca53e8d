// Node.js worker_threads side of ringport.bench's messaging benchmarks (1-4).
// Usage: node messaging.js '{"case": "pingpong"|"msg"|"bytes"|"array_copy"|"array_transfer",
//                             "n": N, "size": BYTES}'
// Prints one JSON line: {"value", "n", "samples"?, "verified"}.  The worker is started and has
// answered before the clock starts; the workload matches ringport/bench/peers.py.
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

const ARRAY_LEN = 131072;
const MSG = { task: 'processData', payload: [1, 2, 3, 4, 5] };

function peer(p) {
  const n = p.n;
  parentPort.once('message', () => {
    if (p.case === 'pingpong') {
      let left = n;
      parentPort.on('message', (v) => {
        parentPort.postMessage(v + 1);
        if (--left === 0) parentPort.close();
      });
      return;
    }
    if (p.case === 'msg') {
      for (let i = 0; i < n; i++) parentPort.postMessage(MSG);
    } else if (p.case === 'bytes') {
      const pay = [new Uint8Array(p.size), new Uint8Array(p.size).fill(1)];
      for (let i = 0; i < n; i++) parentPort.postMessage(pay[i & 1]);
    } else if (p.case === 'array_copy') {
      const a = new Float64Array(ARRAY_LEN);
      for (let j = 0; j < ARRAY_LEN; j++) a[j] = j;
      for (let i = 0; i < n; i++) { a[0] = i; parentPort.postMessage(a); }
    } else if (p.case === 'array_transfer') {
      for (let i = 0; i < n; i++) {
        const f = new Float64Array(ARRAY_LEN);
        f[0] = i; f[ARRAY_LEN - 1] = ARRAY_LEN - 1;
        parentPort.postMessage(f, [f.buffer]);
      }
    }
  });
  parentPort.postMessage('ready');
}

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function main(p) {
  const w = new Worker(__filename, { workerData: p });
  const n = p.n;
  const now = () => Number(process.hrtime.bigint());
  let count = 0, total = 0, t0 = 0, ok = true;
  const lat = [];
  const done = (value, verified, extra) => {
    console.log(JSON.stringify(Object.assign({ value, n, verified }, extra || {})));
    w.terminate();
  };
  w.once('message', (first) => {
    if (first !== 'ready') throw new Error('worker did not say ready');
    w.on('message', (m) => {
      if (p.case === 'pingpong') {
        lat.push((now() - t0) / 1e3);
        if (m !== count + 1) ok = false;
        count++;
        if (count === n) return done(median(lat), ok, { samples: lat });
        t0 = now();
        w.postMessage(count);
        return;
      }
      if (p.case === 'msg') {
        total += (m.task === 'processData' && m.payload.length === 5 && m.payload[4] === 5) ? 1 : 0;
      } else if (p.case === 'bytes') {
        total += m.length * 2 + m[0];
      } else {
        if (m.length !== ARRAY_LEN) ok = false;
        total += m[0] + m[ARRAY_LEN - 1];
      }
      if (++count < n) return;
      const dt = (now() - t0) / 1e9;
      if (p.case === 'msg') return done(n / dt / 1e6, ok && total === n);
      if (p.case === 'bytes') return done(n * p.size / dt / 1e6, ok && total === 2 * n * p.size + (n >> 1));
      const want = n * (n - 1) / 2 + n * (ARRAY_LEN - 1);
      return done(n * ARRAY_LEN * 8 / dt / 1e9, ok && total === want);
    });
    t0 = now();
    w.postMessage('go');
    if (p.case === 'pingpong') { t0 = now(); w.postMessage(0); }
  });
}

if (isMainThread) main(JSON.parse(process.argv[2] || '{}'));
else peer(workerData);
