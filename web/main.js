// The page's controls and readouts. The engine (web/src, compiled to pkg/) runs its own loop
// on animation frames; this file starts it, forwards the controls and shows its progress.
// The browser test (tests/web.rs) drives the page through window.scorefield.
import init, { start, philox, normals, Options } from './pkg/scorefield_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const count = (key, fallback) => {
  const v = Number(params.get(key));
  return Number.isInteger(v) && v > 0 ? v : fallback;
};
// The run's sizes; the URL can change them (the browser test trains briefly).
const steps = count('steps', 3000);
const options = () =>
  new Options(steps, count('batch', 512), count('particles', 4096), count('spf', 20), count('sspf', 3));
// The slider is logarithmic from sigma = 0.1 to 10.
const sigmaOf = (v) => 0.1 * Math.pow(100, v / 1000);

window.scorefield = { ready: false, error: null };

function showNoWebGpu(why) {
  const box = $('nowebgpu');
  box.style.display = 'block';
  box.textContent = `WebGPU is not available here (${why}), so the engine cannot run in this browser. ` +
    'It needs WebGPU: Chrome or Edge 113 or later (on Linux, enable chrome://flags/#enable-unsafe-webgpu), ' +
    'Firefox 141 or later on Windows, or Safari 26. The command-line program runs the same engine natively.';
  $('status').textContent = '';
  window.scorefield.error = box.textContent;
}

function fail(message) {
  $('status').className = 'error';
  $('status').textContent = message;
  window.scorefield.error = message;
}

function drawLoss(page) {
  const canvas = $('loss');
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const losses = page.losses();
  const at = page.loss_steps();
  if (losses.length < 2) return;
  const logs = Array.from(losses, (l) => Math.log10(Math.max(l, 1e-6)));
  const lo = Math.min(...logs), hi = Math.max(...logs);
  const pad = 6, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
  g.strokeStyle = '#1d5f8a';
  g.beginPath();
  logs.forEach((l, i) => {
    const x = pad + (w * at[i]) / steps;
    const y = pad + (hi > lo ? (h * (hi - l)) / (hi - lo) : h / 2);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = '#555';
  g.font = '11px system-ui';
  g.fillText(Math.pow(10, hi).toPrecision(3), pad, pad + 9);
  g.fillText(Math.pow(10, lo).toPrecision(3), pad, canvas.height - pad);
}

function update(page) {
  const error = window.scorefield.error || page.error();
  if (error) return fail(error);
  const losses = page.losses();
  const loss = losses.length ? `, loss ${losses[losses.length - 1].toPrecision(4)}` : '';
  const phase = page.phase();
  const what = {
    training: `training on ${page.toy()}: step ${page.step()} of ${steps}${loss}`,
    sampling: `sampling with annealed Langevin: ${Math.round((100 * page.sampled()[0]) / page.sampled()[1])}%${loss}`,
    done: `done: ${page.samples().length / 2} samples after ${steps} training steps${loss}`,
  }[phase] || phase;
  const ms = page.frame_ms();
  $('status').textContent = ms > 0 ? `${what} (${ms.toFixed(0)} ms per frame)` : what;
  $('resample').disabled = phase === 'training';
  drawLoss(page);
}

async function main() {
  if (!navigator.gpu) return showNoWebGpu('navigator.gpu is missing');
  await init();
  const toy = params.get('toy') || 'eight-gaussians';
  $('toy').value = toy;
  let page;
  try {
    page = await start($('scene'), toy, options());
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    return /no adapter/.test(message) ? showNoWebGpu(message) : fail(message);
  }
  $('adapter').textContent = `Adapter: ${page.adapter()}`;
  $('toy').onchange = () => {
    try {
      page.set_toy($('toy').value);
    } catch (e) {
      fail(e.message);
    }
  };
  $('sigma').oninput = () => {
    const sigma = sigmaOf(Number($('sigma').value));
    $('sigma-value').textContent = sigma.toPrecision(2);
    page.set_sigma(sigma);
  };
  $('resample').onclick = () => page.resample();
  Object.assign(window.scorefield, { ready: true, page, philox, normals });
  setInterval(() => update(page), 250);
}

main().catch((e) => fail(`the page failed to start: ${e}`));
