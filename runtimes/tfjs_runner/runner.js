#!/usr/bin/env node
// Serves one RVM TF.js graph model to rvm-toolkit's TfjsRuntime (runtimes/tfjs.py) over stdin/stdout.
//
// Usage: node runner.js MODEL_JSON [--backend wasm|cpu]
//
// Framing, both directions: uint32 LE header length, a JSON header, then the float32 LE payload the header
// describes ({"tensors": [{"name", "shape"}...]}, concatenated in that order). Requests carry "op":
//   run        src [1,H,W,3] NHWC + "ratio" + "state" (the generation the caller holds, null = zeros);
//              answers fgr, pha and the new state's "generation". States stay here as tf tensors.
//   get_state  answers r1..r4 of the current generation.
//   set_state  r1..r4 (NHWC) become the current state; answers its generation.
// Every answer has "ok"; a failure answers {"ok": false, "error": "..."} and the process keeps serving.
// stdout carries only frames: anything TF.js logs goes to stderr.
'use strict';
const fs = require('fs');
const path = require('path');

console.log = console.error;
console.info = console.error;
const tf = require('@tensorflow/tfjs');

const INPUTS = ['src', 'r1i', 'r2i', 'r3i', 'r4i', 'downsample_ratio'];
const OUTPUTS = ['fgr', 'pha', 'r1o', 'r2o', 'r3o', 'r4o'];
const STATES = ['r1', 'r2', 'r3', 'r4'];

// tf.io.fileSystem exists only in tfjs-node: read model.json and its weight shards from disk ourselves.
function fileHandler(modelJson) {
  const folder = path.dirname(modelJson);
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
      return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const specs = [];
        const shards = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const shard of group.paths) shards.push(fs.readFileSync(path.join(folder, shard)));
        }
        const all = Buffer.concat(shards);
        return [specs, all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
      });
    },
  };
}

class Session {
  constructor(model) {
    this.model = model;
    this.state = null; // [r1..r4] tf tensors, or null before the first frame / after a reset
    this.generation = 0;
  }

  replaceState(tensors) {
    if (this.state) tf.dispose(this.state);
    this.state = tensors;
    this.generation += 1;
    return this.generation;
  }

  checkGeneration(held) {
    if (held !== null && held !== this.generation) {
      throw new Error(`state generation ${held} is stale (current ${this.generation}): restore the state again`);
    }
  }

  async run(header, [src]) {
    this.checkGeneration(header.state);
    const zeros = () => tf.tensor(0.); // a scalar zero broadcasts like a full-size zero state
    const rec = header.state === null ? STATES.map(zeros) : this.state;
    const feeds = {src, downsample_ratio: tf.scalar(header.ratio, 'float32')};
    STATES.forEach((_, i) => { feeds[INPUTS[i + 1]] = rec[i]; });
    const [fgr, pha, ...next] = await this.model.executeAsync(feeds, OUTPUTS);
    tf.dispose([feeds.downsample_ratio, src]);
    if (header.state === null) tf.dispose(rec);
    const generation = this.replaceState(next);
    return {ok: true, generation, tensors: [fgr, pha]};
  }

  getState(header) {
    this.checkGeneration(header.state);
    if (!this.state) throw new Error('no state yet: run a frame first');
    return {ok: true, tensors: this.state.map((t) => tf.clone(t))};
  }

  setState(header, tensors) {
    if (tensors.length !== 4) throw new Error(`set_state takes 4 tensors r1..r4, got ${tensors.length}`);
    return {ok: true, generation: this.replaceState(tensors)};
  }
}

function decodeTensors(header, payload) {
  let offset = 0;
  return (header.tensors || []).map(({shape}) => {
    const count = shape.reduce((a, b) => a * b, 1);
    const bytes = payload.subarray(offset, offset + 4 * count);
    if (bytes.length !== 4 * count) throw new Error(`payload too short for tensor of shape [${shape}]`);
    offset += 4 * count;
    // copy into an aligned buffer: the frame's payload can start at any byte
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    return tf.tensor(values, shape, 'float32');
  });
}

function encode(answer) {
  const tensors = answer.tensors || [];
  const buffers = tensors.map((t) => {
    const values = t.dataSync();
    return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  });
  const header = Buffer.from(JSON.stringify({...answer, tensors: tensors.map((t) => ({shape: t.shape}))}));
  tf.dispose(tensors); // answers own their tensors (outputs, clones of the state)
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  return Buffer.concat([length, header, ...buffers]);
}

async function handle(session, header, payload) {
  const tensors = decodeTensors(header, payload);
  try {
    if (header.op === 'run') return await session.run(header, tensors);
    if (header.op === 'get_state') return session.getState(header);
    if (header.op === 'set_state') return session.setState(header, tensors);
    throw new Error(`unknown op ${JSON.stringify(header.op)}`);
  } catch (error) {
    tf.dispose(tensors.filter((t) => !session.state || !session.state.includes(t)));
    throw error;
  }
}

// Reads length-prefixed frames from a stream; each request carries its payload size in "bytes". Chunks are
// joined only once a whole part (length, header or payload) has arrived, so a large frame is copied once.
function frames(stream, onFrame) {
  let chunks = [];
  let buffered = 0;
  let stage = 'length'; // then 'header', then 'payload'
  let need = 4;
  let header = null;
  const take = (count) => {
    const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, buffered);
    chunks = [all.subarray(count)];
    buffered -= count;
    return all.subarray(0, count);
  };
  let chain = Promise.resolve();
  stream.on('data', (chunk) => {
    chunks.push(chunk);
    buffered += chunk.length;
    while (buffered >= need) {
      if (stage === 'length') {
        [stage, need] = ['header', take(4).readUInt32LE(0)];
      } else if (stage === 'header') {
        header = JSON.parse(take(need).toString('utf8'));
        [stage, need] = ['payload', header.bytes || 0];
      } else {
        const [request, payload] = [header, take(need)];
        [stage, need] = ['length', 4];
        chain = chain.then(() => onFrame(request, payload)); // one request at a time, in order
      }
    }
  });
  stream.on('end', () => chain.then(() => process.exit(0)));
}

function reply(answer) {
  process.stdout.write(encode(answer));
}

async function main() {
  const [modelJson, ...rest] = process.argv.slice(2);
  const backendFlag = rest.indexOf('--backend');
  const backend = backendFlag >= 0 ? rest[backendFlag + 1] : 'wasm';
  let session;
  let stage = 'backend'; // what failed, in a failed hello: the backend, or the model (a bad artifact)
  try {
    if (!modelJson) throw new Error('usage: node runner.js MODEL_JSON [--backend wasm|cpu]');
    if (backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');
    if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} failed to initialise`);
    stage = 'model';
    if (!fs.existsSync(modelJson)) throw new Error(`no TF.js model at ${modelJson}: pass a model.json path`);
    session = new Session(await tf.loadGraphModel(fileHandler(modelJson)));
  } catch (error) {
    reply({ok: false, stage, error: String(error && error.message || error)});
    process.exit(1);
  }
  reply({ok: true, backend: tf.getBackend(), tfjs_version: tf.version.tfjs});
  frames(process.stdin, async (header, payload) => {
    try {
      const answer = await handle(session, header, payload);
      reply(answer);
    } catch (error) {
      reply({ok: false, error: String(error && error.message || error)});
    }
  });
}

main();
