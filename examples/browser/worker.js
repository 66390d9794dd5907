// Trains the emitted digits model off the main thread and answers predictions.
import { load, INPUT_DIM } from "./digits.js";

const [model, data, weights] = await Promise.all([
  load(),
  fetch("data.json").then((r) => r.json()),
  fetch("weights.json").then((r) => r.json()),
]);
model.setWeights(weights);
const rows = data.labels.length;
const trainRows = rows - data.testRows;
const x = Float64Array.from(data.pixels, (v) => v / 16); // pixels 0..16 -> 0..1
const labels = Int32Array.from(data.labels);
const xTrain = x.subarray(0, trainRows * INPUT_DIM), yTrain = labels.subarray(0, trainRows);
const xTest = x.subarray(trainRows * INPUT_DIM), yTest = labels.subarray(trainRows);

function accuracy() {
  const p = model.forward(xTest);
  let right = 0;
  for (let i = 0; i < yTest.length; i++) {
    const row = p.subarray(i * 10, i * 10 + 10);
    if (row.indexOf(Math.max(...row)) === yTest[i]) right++;
  }
  return right / yTest.length;
}

onmessage = ({ data: message }) => {
  if (message.type === "train") {
    for (let epoch = 1; epoch <= message.epochs; epoch++) {
      const [loss] = model.fit(xTrain, yTrain, { epochs: 1, batchSize: 32 });
      postMessage({ type: "epoch", epoch, loss, accuracy: accuracy() });
    }
    postMessage({ type: "done", accuracy: accuracy(), steps: model.iterations });
  } else if (message.type === "predict") {
    postMessage({ type: "prediction", probabilities: Array.from(model.forward(message.pixels)) });
  }
};
postMessage({ type: "ready", trainRows, testRows: yTest.length });
