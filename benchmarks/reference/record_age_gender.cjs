// Record the original face-api.js AgeGenderNet outputs (tfjs cpu backend, Node.js).
// Setup: npm install @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
// Usage: node record_age_gender.cjs MODEL_DIR INPUTS.u8 N OUT.json
// INPUTS.u8: N x 112 x 112 x 3 uint8 RGB, row-major.
// Writes {"age": (N,), "sex_probs": (N, 2) [male, female], "features": (N, 512)}.
const fs = require('fs');
const path = require('path');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

async function main() {
  const [modelDir, inputsPath, nStr, outPath] = process.argv.slice(2);
  const n = parseInt(nStr, 10);
  await faceapi.tf.setBackend('cpu');
  await faceapi.tf.ready();
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, 'age_gender_model-weights_manifest.json')));
  const weightData = new Uint8Array(fs.readFileSync(path.join(modelDir, manifest[0].paths[0]))).buffer;
  const weightMap = faceapi.tf.io.decodeWeights(weightData, manifest[0].weights);
  const net = new faceapi.AgeGenderNet();
  net.loadFromWeightMap(weightMap);
  const bytes = fs.readFileSync(inputsPath);
  const age = [];
  const sexProbs = [];
  const features = [];
  for (let i = 0; i < n; i += 1) {
    const px = new Float32Array(bytes.subarray(i * 112 * 112 * 3, (i + 1) * 112 * 112 * 3));
    const img = faceapi.tf.tensor4d(px, [1, 112, 112, 3]);
    const input = await faceapi.toNetInput(img);
    const out = net.forwardInput(input);
    age.push(out.age.dataSync()[0]);
    sexProbs.push(Array.from(out.gender.dataSync()));
    const bottleneck = net.faceFeatureExtractor.forwardInput(input);
    features.push(Array.from(faceapi.tf.avgPool(bottleneck, [7, 7], [2, 2], 'valid').dataSync()));
  }
  const out = { age, sex_probs: sexProbs, features, faceapi_version: faceapi.version,
    tfjs_version: faceapi.tf.version_core, backend: faceapi.tf.getBackend() };
  fs.writeFileSync(outPath, JSON.stringify(out));
}
main();
