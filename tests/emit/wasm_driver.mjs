// Runs the emitted ES module under Node for tests/emit/test_wasm.py.
//   node wasm_driver.mjs MODULE.js REQUEST.json RESULT.json
// REQUEST: {x, y, weights, epochs, batchSize} -> RESULT: {losses, weights, forward}
// or {refusals: true, x, y, weights} -> RESULT: {errors: [[name, message]], calls, unchanged, badOrder}
// or {orders: [[row, ...], ...], x, y, weights, batchSize} -> RESULT: {epoch: {losses, weights},
//    loop: {losses, weights}}: trainEpoch per order, and trainStep per batch from JavaScript
// or {shuffle: [seed, ...], x, y, weights, epochs, batchSize} -> RESULT: {runs: [losses, ...]}
// or {failure: true, x, y, weights} -> RESULT: {message, iterations, weights}
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [modulePath, requestPath, resultPath] = process.argv.slice(2);
const { load, INPUT_DIM } = await import(pathToFileURL(modulePath));
const request = JSON.parse(readFileSync(requestPath, "utf8"));
const model = await load();
const Values = model.dtype === "float32" ? Float32Array : Float64Array;
model.setWeights(request.weights);
const plain = (weights) => Object.fromEntries(Object.entries(weights).map(([k, v]) => [k, Array.from(v)]));

let result;
if (request.refusals) {
  // every export is counted: a refused call must not reach the wasm code
  let calls = 0;
  const exports = model.exports;
  model.exports = new Proxy({ ...exports }, {
    get: (target, name) => (typeof target[name] === "function" ? (...a) => (calls++, target[name](...a)) : target[name]),
  });
  const before = JSON.stringify(plain(model.getWeights()));
  const x = Float64Array.from(request.x);
  const y = Int32Array.from(request.y);
  const attempts = {
    forward_short_x: () => model.forward(x.subarray(0, INPUT_DIM - 1)),
    forward_not_numbers: () => model.forward("0,1"),
    train_step_short_y: () => model.trainStep(x, y.subarray(1)),
    train_step_bad_label: () => model.trainStep(x, Int32Array.from(y, (v, i) => (i === 2 ? 10 : v))),
    fit_long_y: () => model.fit(x, Int32Array.from([...y, 0]), { epochs: 1 }),
    fit_bad_batch_size: () => model.fit(x, y, { batchSize: 0 }),
    fit_shuffle_not_boolean: () => model.fit(x, y, { shuffle: 1 }),
    fit_order_short: () => model.fit(x, y, { order: () => [0, 1, 2] }),
    train_epoch_order_outside: () => model.trainEpoch(x, y, { order: [0, 1, 4, 2] }),
    train_epoch_order_fraction: () => model.trainEpoch(x, y, { order: [0, 1, 2.5, 3] }),
    set_weights_short: () => model.setWeights({ ...request.weights, "dense/bias": [0] }),
  };
  const errors = [];
  for (const [name, attempt] of Object.entries(attempts)) {
    try {
      attempt();
      errors.push([name, null]);
    } catch (err) {
      errors.push([name, `${err.name}: ${err.message}`]);
    }
  }
  const unchanged = JSON.stringify(plain(model.getWeights())) === before && model.iterations === 0;
  // the wasm function checks the order itself too: a row index outside [0, rows) is refused
  model.exports = exports;
  const data = model.place(x, y, y.length, 2);
  new BigInt64Array(model.memory.buffer, data.at.order, y.length)[1] = BigInt(y.length);
  data.ordered = true; // so that epoch() leaves the poked order as it is
  let badOrder = null;
  try {
    model.epoch(data, null);
  } catch (err) {
    badOrder = err.message;
  }
  const stillUnchanged = JSON.stringify(plain(model.getWeights())) === before && model.iterations === 0;
  result = { errors, calls, unchanged, badOrder, stillUnchanged };
} else if (request.orders) {
  const x = Values.from(request.x);
  const y = Int32Array.from(request.y);
  const losses = request.orders.map((order) => model.trainEpoch(x, y, { batchSize: request.batchSize, order }));
  const epoch = { losses, weights: plain(model.getWeights()), iterations: model.iterations };
  const loop = await load(); // the same batches, one trainStep call each from JavaScript
  loop.setWeights(request.weights);
  const loopLosses = request.orders.map((order) => {
    let total = 0;
    for (let start = 0; start < order.length; start += request.batchSize) {
      const rows = order.slice(start, start + request.batchSize);
      const xs = new Values(rows.length * INPUT_DIM);
      rows.forEach((r, i) => xs.set(x.subarray(r * INPUT_DIM, (r + 1) * INPUT_DIM), i * INPUT_DIM));
      total += loop.trainStep(xs, Int32Array.from(rows, (r) => y[r])) * rows.length;
    }
    return total / order.length;
  });
  result = { epoch, loop: { losses: loopLosses, weights: plain(loop.getWeights()), iterations: loop.iterations } };
} else if (request.failure) {
  // a nan pixel in row 2: the second step of batch size 2 fails, the first stays applied
  const x = Values.from(request.x);
  x[2 * INPUT_DIM] = NaN;
  let message = null;
  try {
    model.trainEpoch(x, Int32Array.from(request.y), { batchSize: 2 });
  } catch (err) {
    message = err.message;
  }
  result = { message, iterations: model.iterations, weights: plain(model.getWeights()) };
  // t = 0 (iterations -1): Adam's bias correction makes the new weights inf; one step
  model.iterations = -1;
  try {
    model.trainStep(Values.from(request.x).subarray(0, 2 * INPUT_DIM), Int32Array.from(request.y).subarray(0, 2));
  } catch (err) {
    result.stepMessage = err.message;
  }
} else if (request.shuffle) {
  const x = Values.from(request.x);
  const runs = request.shuffle.map((seed) => {
    model.setWeights(request.weights);
    model.resetOptimizer();
    const options = { epochs: request.epochs, batchSize: request.batchSize, shuffle: true, seed };
    return model.fit(x, Int32Array.from(request.y), options);
  });
  result = { runs };
} else {
  const x = Values.from(request.x);
  const losses = model.fit(x, Int32Array.from(request.y), { epochs: request.epochs, batchSize: request.batchSize });
  result = { losses, weights: plain(model.getWeights()), forward: Array.from(model.forward(x.subarray(0, 5 * INPUT_DIM))) };
}
writeFileSync(resultPath, JSON.stringify(result));
