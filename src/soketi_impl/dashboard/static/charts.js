'use strict';
// Small line charts on <canvas>: no library, no network. Used by dashboard.js.
//
//   drawChart(canvas, [{label, color, points: [[timeMs, value], ...]}], windowMs)
//
// Draws the last windowMs up to now, one line per series, with the largest value
// on the y axis and the time span on the x axis.

/* exported drawChart */
function drawChart(canvas, series, windowMs) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const pad = { left: 36, right: 6, top: 6, bottom: 16 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const now = Date.now();
  const from = now - windowMs;
  let max = 0;
  for (const s of series) for (const [t, v] of s.points) if (t >= from && v > max) max = v;
  max = niceCeiling(max);

  // grid and labels
  ctx.strokeStyle = '#e3e6eb';
  ctx.fillStyle = '#6b7280';
  ctx.font = '10px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 2; i += 1) {
    const y = pad.top + h - (h * i) / 2;
    ctx.beginPath();
    ctx.moveTo(pad.left, y);
    ctx.lineTo(pad.left + w, y);
    ctx.stroke();
    ctx.textAlign = 'right';
    ctx.fillText(formatNumber((max * i) / 2), pad.left - 4, y + 3);
  }
  ctx.textAlign = 'left';
  ctx.fillText(windowMs < 120000 ? `-${Math.round(windowMs / 1000)} s` : `-${Math.round(windowMs / 60000)} min`, pad.left, height - 3);
  ctx.textAlign = 'right';
  ctx.fillText('now', pad.left + w, height - 3);

  // one line per series
  const x = (t) => pad.left + ((t - from) / windowMs) * w;
  const y = (v) => pad.top + h - (max ? (v / max) * h : 0);
  ctx.lineWidth = 1.5;
  for (const s of series) {
    const pts = s.points.filter(([t]) => t >= from);
    if (!pts.length) continue;
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    pts.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
  }
}

/** A round number at or above v (1, 2, 5 x 10^n), so the axis reads well. */
function niceCeiling(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatNumber(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
