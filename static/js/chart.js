// A small live chart: the last N samples as a filled line on a canvas.
export class Sparkline {
  constructor(canvas, { samplesMax = 60, color = "#ff2d55" } = {}) {
    this.canvas = canvas;
    this.samplesMax = samplesMax;
    this.color = color;
    this.samples = [];
  }

  push(value) {
    this.samples.push(value);
    if (this.samples.length > this.samplesMax) this.samples.shift();
    this.draw();
  }

  draw() {
    const { canvas, samples } = this;
    const context = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    context.clearRect(0, 0, width, height);
    if (samples.length < 2) return;
    const top = Math.max(1, ...samples);
    const step = width / (this.samplesMax - 1);
    const x0 = width - (samples.length - 1) * step;
    const y = (v) => height - 2 - (v / top) * (height - 4);
    context.beginPath();
    context.moveTo(x0, height);
    samples.forEach((v, i) => context.lineTo(x0 + i * step, y(v)));
    context.lineTo(width, height);
    context.closePath();
    context.fillStyle = this.color + "33";
    context.fill();
    context.beginPath();
    samples.forEach((v, i) => (i ? context.lineTo : context.moveTo).call(context, x0 + i * step, y(v)));
    context.strokeStyle = this.color;
    context.lineWidth = 2;
    context.stroke();
  }
}
