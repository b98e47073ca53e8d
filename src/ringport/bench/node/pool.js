// Node.js side of ringport.bench's pool benchmarks: the same three jobs on a piscina pool.
// Usage: node pool.js '{"case": "noop"|"cpu"|"map", "n": N, "workers": W, "warm": M,
//                       "modules": DIR}'
// DIR is the node_modules folder the runner installed piscina into (from package.json here).
// Prints one JSON line: {"seconds", "n", "spin", "warm_workers", "verified"}.  The pool's
// threads have run a warm-up before the clock starts (2W tasks of 20 ms, then M no-ops, as
// on the Python side); only the task flow is timed.
//   noop: N tasks that return their argument, all submitted, then awaited.
//   cpu:  N tasks of a JavaScript loop calibrated here to about 1 ms (JIT-compiled, so not the
//         Python loop's count; the Python side calibrates its own loop to 1 ms as well).
//   map:  N small items (x * x), one pool.run per item (piscina has no map or chunking).
'use strict';
const { isMainThread, threadId } = require('worker_threads');

function spin(n) {
  let c = 0;
  for (let i = 0; i < n; i++) c = (c + i * i) & 0xFFFF;
  return c;
}

function spinResult(n) {
  const b = BigInt(n);
  return Number((((b - 1n) * b * (2n * b - 1n)) / 6n) & 0xFFFFn);
}

const tasks = {
  noop: (x) => x,
  spin,
  square: (x) => x * x,
  who: (n) => { spin(n); return threadId; },
};

function calibrate(ms) {
  let n = 1000;
  for (;;) {
    spin(n);                                  // JIT warm
    const t0 = process.hrtime.bigint();
    spin(n);
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (dt > 5 * ms) {
      const ts = [];
      const m = Math.max(1, Math.round(n * ms / dt));
      for (let r = 0; r < 5; r++) {
        const t = process.hrtime.bigint();
        spin(m);
        ts.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      ts.sort((a, b) => a - b);
      return Math.max(1, Math.round(m * ms / ts[2]));
    }
    n *= 4;
  }
}

async function main(p) {
  const { Piscina } = require(require.resolve('piscina', { paths: [p.modules] }));
  const w = p.workers;
  const pool = new Piscina({ filename: __filename, minThreads: w, maxThreads: w,
                             idleTimeout: 1e9 });
  const spinN = p.case === 'cpu' ? calibrate(1) : 0;
  const warmN = calibrate(20);
  const seen = new Set(await Promise.all(Array.from({ length: 2 * w },
    () => pool.run(warmN, { name: 'who' }))));
  await Promise.all(Array.from({ length: p.warm }, (_, i) => pool.run(i, { name: 'noop' })));
  const n = p.n;
  let ok;
  const t0 = process.hrtime.bigint();
  if (p.case === 'noop') {
    const rs = await Promise.all(Array.from({ length: n }, (_, i) => pool.run(i, { name: 'noop' })));
    ok = rs.every((r, i) => r === i);
  } else if (p.case === 'cpu') {
    const rs = await Promise.all(Array.from({ length: n }, () => pool.run(spinN, { name: 'spin' })));
    const want = spinResult(spinN);
    ok = rs.every((r) => r === want);
  } else if (p.case === 'map') {
    const rs = await Promise.all(Array.from({ length: n }, (_, i) => pool.run(i, { name: 'square' })));
    ok = rs.every((r, i) => r === i * i);
  } else {
    throw new Error(`unknown case ${p.case}`);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await pool.destroy();
  console.log(JSON.stringify({ seconds, n, spin: spinN, warm_workers: seen.size, verified: ok }));
}

if (isMainThread) {
  main(JSON.parse(process.argv[2] || '{}')).catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
} else {
  module.exports = tasks;
}
