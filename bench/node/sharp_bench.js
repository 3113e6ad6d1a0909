// Output spec v1 with sharp, one image at a time on one thread, the way a
// Node.js upload server would write it: each output from the upload file.
// argv: JSON {files: [...], outDir, reps}. Prints JSON {file: [ms, ...]}.
const sharp = require('sharp');
const path = require('path');

sharp.concurrency(1);
sharp.cache(false);

const SPEC = [
  { op: 'thumbnail', box: 320, quality: 80 },
  { op: 'blur', box: 640, quality: 70, blur: 0.02 },
  { op: 'low-quality', box: 1280, quality: 30 },
];

async function one(file, outDir) {
  const meta = await sharp(file).metadata();
  const swap = (meta.orientation || 1) >= 5;
  const w = swap ? meta.height : meta.width;
  const h = swap ? meta.width : meta.height;
  const name = path.parse(file).name;
  for (const s of SPEC) {
    const scale = Math.min(1, s.box / w, s.box / h);
    const ow = Math.max(1, Math.round(w * scale));
    const oh = Math.max(1, Math.round(h * scale));
    let img = sharp(file).rotate().resize({ width: ow, height: oh, fit: 'fill', kernel: 'lanczos3' });
    if (s.blur) img = img.blur(Math.max(0.3, s.blur * Math.max(ow, oh)));
    await img.webp({ quality: s.quality, effort: 4 }).toFile(path.join(outDir, `${name}_${s.op}.webp`));
  }
}

async function main() {
  const { files, outDir, reps } = JSON.parse(process.argv[2]);
  const out = {};
  for (const f of files) {
    out[f] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = process.hrtime.bigint();
      await one(f, outDir);
      out[f].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
