// Record the original face-api.js FaceExpressionNet outputs (tfjs cpu backend, Node.js).
// Setup: npm install @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
// Usage: node record_faceapi.cjs MODEL_DIR INPUTS.u8 N OUT.json
// INPUTS.u8: N x 112 x 112 x 3 uint8 RGB, row-major. Writes {"probs": (N, 7), "features": (N, 256)}.
const fs = require('fs');
const path = require('path');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

async function main() {
  const [modelDir, inputsPath, nStr, outPath] = process.argv.slice(2);
  const n = parseInt(nStr, 10);
  await faceapi.tf.setBackend('cpu');
  await faceapi.tf.ready();
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, 'face_expression_model-weights_manifest.json')));
  const weightData = new Uint8Array(fs.readFileSync(path.join(modelDir, manifest[0].paths[0]))).buffer;
  const weightMap = faceapi.tf.io.decodeWeights(weightData, manifest[0].weights);
  const net = new faceapi.FaceExpressionNet();
  net.loadFromWeightMap(weightMap);
  const bytes = fs.readFileSync(inputsPath);
  const probs = [];
  const features = [];
  for (let i = 0; i < n; i += 1) {
    const px = new Float32Array(bytes.subarray(i * 112 * 112 * 3, (i + 1) * 112 * 112 * 3));
    const img = faceapi.tf.tensor4d(px, [1, 112, 112, 3]);
    const input = await faceapi.toNetInput(img);
    probs.push(Array.from(net.forwardInput(input).dataSync()));
    features.push(Array.from(net.faceFeatureExtractor.forwardInput(input).dataSync()));
  }
  const out = { probs, features, faceapi_version: faceapi.version, tfjs_version: faceapi.tf.version_core,
    backend: faceapi.tf.getBackend() };
  fs.writeFileSync(outPath, JSON.stringify(out));
}
main();
