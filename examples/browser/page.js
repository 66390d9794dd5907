// The page: starts the training worker, draws the loss curve, renders the formulas,
// and turns the drawing pad into 8x8 pixels for a prediction.
const $ = (id) => document.getElementById(id);
const epochs = Number(new URLSearchParams(location.search).get("epochs") ?? 30);
const worker = new Worker("worker.js", { type: "module" });
const losses = [];
let predicted = null;
let finished;
const done = new Promise((resolve) => (finished = resolve));

fetch("formulas.json")
  .then((r) => r.json())
  .then((formulas) => {
    $("formulas").innerHTML = formulas
      .map((f) => `<div class="formula"><span class="weight">${f.weight}</span>${f.mathml}</div>`)
      .join("");
  });

function drawCurve() {
  const top = Math.max(...losses);
  const points = losses.map((l, i) => `${(400 * (i + 1)) / epochs},${200 - (190 * l) / top}`);
  $("loss-line").setAttribute("points", ["0,10", ...points].join(" "));
}

worker.onmessage = ({ data: m }) => {
  if (m.type === "ready") {
    $("status").textContent = `training on ${m.trainRows} images…`;
    $("status").dataset.state = "training";
    worker.postMessage({ type: "train", epochs });
  } else if (m.type === "epoch") {
    losses.push(m.loss);
    $("epoch").textContent = m.epoch;
    $("loss").textContent = m.loss.toFixed(4);
    $("accuracy").textContent = `${(100 * m.accuracy).toFixed(1)}%`;
    drawCurve();
  } else if (m.type === "done") {
    $("status").textContent = `done: ${m.steps} training steps`;
    $("status").dataset.state = "done";
    finished({ accuracy: m.accuracy, losses: [...losses] });
  } else if (m.type === "prediction") {
    const p = m.probabilities;
    const best = p.indexOf(Math.max(...p));
    $("prediction").textContent = best;
    $("bars").innerHTML = p
      .map((v, k) => `<div>${k} <span class="bar" style="width:${Math.round(120 * v)}px"></span></div>`)
      .join("");
    if (predicted) predicted(best);
  }
};

// --- the drawing pad: strokes on a 192x192 canvas, averaged into 8x8 pixels 0..1
const pad = $("pad");
const ctx = pad.getContext("2d");
ctx.lineWidth = 18;
ctx.lineCap = ctx.lineJoin = "round";
ctx.strokeStyle = "#fff";
let drawing = false;

function pixels() {
  const image = ctx.getImageData(0, 0, pad.width, pad.height).data;
  const cell = pad.width / 8;
  const out = new Float64Array(64);
  for (let r = 0; r < 8; r++)
    for (let c = 0; c < 8; c++) {
      let sum = 0;
      for (let y = r * cell; y < (r + 1) * cell; y++)
        for (let x = c * cell; x < (c + 1) * cell; x++) sum += image[4 * (y * pad.width + x)];
      out[8 * r + c] = sum / (cell * cell * 255);
    }
  return out;
}

function predict() {
  return new Promise((resolve) => {
    predicted = resolve;
    worker.postMessage({ type: "predict", pixels: pixels() });
  });
}

pad.addEventListener("pointerdown", (e) => {
  drawing = true;
  ctx.beginPath();
  ctx.moveTo(e.offsetX, e.offsetY);
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  ctx.lineTo(e.offsetX, e.offsetY);
  ctx.stroke();
});
pad.addEventListener("pointerup", () => {
  drawing = false;
  predict();
});
$("clear").addEventListener("click", () => ctx.clearRect(0, 0, pad.width, pad.height));

// For scripts and tests: wait for the training, draw an 8x8 image (values 0..1) and predict.
window.symgradPage = {
  done,
  async drawPixels(values) {
    const cell = pad.width / 8;
    ctx.clearRect(0, 0, pad.width, pad.height);
    values.forEach((v, i) => {
      const level = Math.round(255 * v);
      ctx.fillStyle = `rgb(${level},${level},${level})`;
      ctx.fillRect((i % 8) * cell, Math.floor(i / 8) * cell, cell, cell);
    });
    return predict();
  },
};
