// Robust Video Matting in the browser: camera or a local video through an exported TF.js or ONNX artifact.
//
// `rvm web` builds the folder this page lives in: models.json lists the artifacts, vendor/ holds TF.js and
// onnxruntime-web (nothing is fetched from elsewhere). The engine settings (artifact, backend) are URL
// parameters and changing them reloads the page: the two engines' scripts both claim the page's globals.
// URL parameters: model, backend (auto|webgpu|webgl|wasm), ratio (auto|number), source (camera|none).
//
// window.rvm is the page's test hook: ready (a promise), status(), and record(n), which resets the
// recurrent state and returns the next n frames' input pixels and outputs exactly as the page computed them.
'use strict';

const VENDOR = new URL('vendor/', location.href).href;
const STATE_INPUTS = ['r1i', 'r2i', 'r3i', 'r4i'];
const OUTPUTS = ['fgr', 'pha', 'r1o', 'r2o', 'r3o', 'r4o'];
// preference order where the backend is "auto"
const BACKENDS = {tfjs: ['webgpu', 'webgl', 'wasm'], onnx: ['webgpu', 'wasm']};
const ENGINE_TITLES = {tfjs: 'TF.js', onnx: 'onnxruntime-web'};
const STATS_WINDOW = 20; // frames the shown frames/s and latency average over

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const app = {
  engine: null,
  model: null,
  sourceKind: null,
  stream: null,
  objectUrl: null,
  stateKey: null, // "WxH@ratio": the recurrent state belongs to one frame size and ratio
  resetPending: true,
  framesSinceReset: 0,
  sourceFrames: 0, // frames processed since the source last changed
  frames: 0,
  finished: [], // {at, latency} of the last frames, for the shown statistics
  pendingRecording: null,
  recording: null,
  error: null,
  backgroundUrl: null, // object URL of the chosen background image
};

// ---- small helpers ----------------------------------------------------------------------------------

function showError(text) {
  app.error = text;
  $('message').textContent = text;
  $('message').hidden = false;
}

function clearError() {
  app.error = null;
  $('message').hidden = true;
}

function messageOf(error) {
  return String((error && error.message) || error).split('\n')[0];
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(script);
  });
}

async function webgpuAdapter() {
  if (!navigator.gpu) throw new Error('this browser has no WebGPU');
  if (!(await navigator.gpu.requestAdapter())) throw new Error('WebGPU found no adapter');
}

function webglContext(refuseSoftware) {
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
  if (!gl) throw new Error('this browser has no WebGL');
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : '';
  // WebGL emulated on the CPU (SwiftShader, llvmpipe) runs RVM ~20x slower than wasm on the same CPU
  if (refuseSoftware && /swiftshader|llvmpipe|software/i.test(renderer)) {
    throw new Error(`software renderer (${renderer}), slower than wasm`);
  }
}

// the backends to try, best first: the one asked for, or every one of the engine's in preference order
function backendsToTry(engine, wanted) {
  if (wanted === 'auto') return BACKENDS[engine];
  if (!BACKENDS[engine].includes(wanted)) {
    throw new Error(`${ENGINE_TITLES[engine]} has no backend "${wanted}": choose ${BACKENDS[engine].join(', ')} or auto`);
  }
  return [wanted];
}

function noBackend(engine, reasons) {
  return new Error(`No ${ENGINE_TITLES[engine]} backend works in this browser (${reasons.join('; ')}). ` +
                   'Try another browser, or enable WebGL / WebAssembly.');
}

// RGBA pixels to float32 in 0..1, NHWC (TF.js) or NCHW (ONNX); the division is in double precision then
// rounded, which the tests replay exactly
function toFloat(rgba, width, height, layout) {
  const count = width * height;
  const out = new Float32Array(3 * count);
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < 3; c++) {
      out[layout === 'nhwc' ? 3 * i + c : c * count + i] = rgba[4 * i + c] / 255;
    }
  }
  return out;
}

function chwToHwc(planes, count) {
  const out = new Float32Array(3 * count);
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < 3; c++) out[3 * i + c] = planes[c * count + i];
  }
  return out;
}

// ---- engines: open(model, wanted backend) -> {backend, detail, run(rgba, w, h, ratio), reset()} ----------

class TfjsEngine {
  static async open(model, wanted) {
    await loadScript(VENDOR + 'tf.min.js');
    const reasons = [];
    for (const backend of backendsToTry('tfjs', wanted)) {
      try {
        if (backend === 'webgpu') {
          await webgpuAdapter();
          await loadScript(VENDOR + 'tf-backend-webgpu.min.js');
        } else if (backend === 'webgl') {
          webglContext(wanted === 'auto');
        } else {
          await loadScript(VENDOR + 'tf-backend-wasm.min.js');
          tf.wasm.setWasmPaths(VENDOR);
        }
        if (!(await tf.setBackend(backend))) throw new Error('failed to initialise');
        const engine = new TfjsEngine(await tf.loadGraphModel(model.url), backend);
        await engine.warmUp(); // a backend can initialise and still fail on the model's kernels
        return engine;
      } catch (error) {
        reasons.push(`${backend}: ${messageOf(error)}`);
      }
    }
    throw noBackend('tfjs', reasons);
  }

  constructor(graph, backend) {
    this.graph = graph;
    this.backend = backend;
    this.state = null; // r1..r4 as tf tensors; null = zeros
    const wasm = backend === 'wasm' ? ` (${crossOriginIsolated ? 'multi-threaded' : 'single-threaded'})` : '';
    this.detail = `TF.js ${tf.version.tfjs} · backend ${backend}${wasm}`;
  }

  async warmUp() {
    await this.run(new Uint8ClampedArray(64 * 64 * 4), 64, 64, 0.5);
    this.reset();
  }

  async run(rgba, width, height, ratio) {
    const feeds = {src: tf.tensor(toFloat(rgba, width, height, 'nhwc'), [1, height, width, 3], 'float32'),
                   downsample_ratio: tf.scalar(ratio, 'float32')};
    // a scalar zero broadcasts as a full-size zero state (the official convention)
    const state = this.state || STATE_INPUTS.map(() => tf.scalar(0, 'float32'));
    STATE_INPUTS.forEach((name, i) => { feeds[name] = state[i]; });
    // execute(): the graph has no control flow, and executeAsync would warn so on every frame
    const [fgr, pha, ...next] = this.graph.execute(feeds, OUTPUTS);
    tf.dispose([feeds.src, feeds.downsample_ratio, ...state]);
    this.state = next;
    const [fgrData, phaData] = await Promise.all([fgr.data(), pha.data()]);
    tf.dispose([fgr, pha]);
    return {fgr: fgrData, pha: phaData};
  }

  reset() {
    if (this.state) tf.dispose(this.state);
    this.state = null;
  }
}

class OrtEngine {
  static async open(model, wanted) {
    const reasons = [];
    let backends = backendsToTry('onnx', wanted);
    if (backends.includes('webgpu')) {
      try {
        await webgpuAdapter();
      } catch (error) {
        reasons.push(`webgpu: ${messageOf(error)}`);
        backends = backends.filter((backend) => backend !== 'webgpu');
      }
    }
    // the WebGPU build carries the wasm backend too, but is twice the size: load it only when it can be used
    await loadScript(VENDOR + (backends.includes('webgpu') ? 'ort.webgpu.min.js' : 'ort.wasm.min.js'));
    ort.env.wasm.wasmPaths = VENDOR;
    ort.env.wasm.numThreads = crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    for (const backend of backends) {
      try {
        const session = await ort.InferenceSession.create(model.url, {executionProviders: [backend]});
        const engine = new OrtEngine(session, backend);
        await engine.warmUp();
        return engine;
      } catch (error) {
        reasons.push(`${backend}: ${messageOf(error)}`);
      }
    }
    throw noBackend('onnx', reasons);
  }

  constructor(session, backend) {
    this.session = session;
    this.backend = backend;
    this.state = null; // r1..r4 as ort tensors; null = zeros
    const threads = backend === 'wasm' ? ` (${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? 's' : ''})` : '';
    this.detail = `onnxruntime-web ${ort.env.versions.web} · backend ${backend}${threads}`;
  }

  async warmUp() {
    await this.run(new Uint8ClampedArray(64 * 64 * 4), 64, 64, 0.5);
    this.reset();
  }

  async run(rgba, width, height, ratio) {
    const feeds = {src: new ort.Tensor('float32', toFloat(rgba, width, height, 'nchw'), [1, 3, height, width]),
                   downsample_ratio: new ort.Tensor('float32', Float32Array.of(ratio), [1])};
    // a [1,1,1,1] zero broadcasts as a full-size zero state (the official convention)
    const state = this.state || STATE_INPUTS.map(() => new ort.Tensor('float32', new Float32Array(1), [1, 1, 1, 1]));
    STATE_INPUTS.forEach((name, i) => { feeds[name] = state[i]; });
    const out = await this.session.run(feeds);
    this.state = OUTPUTS.slice(2).map((name) => out[name]);
    return {fgr: chwToHwc(out.fgr.data, width * height), pha: out.pha.data};
  }

  reset() {
    this.state = null;
  }
}

const ENGINES = {tfjs: TfjsEngine, onnx: OrtEngine};

// ---- sources ------------------------------------------------------------------------------------------

function stopSource() {
  const video = $('video');
  video.pause();
  if (app.stream) app.stream.getTracks().forEach((track) => track.stop());
  if (app.objectUrl) URL.revokeObjectURL(app.objectUrl);
  app.stream = app.objectUrl = null;
  video.onerror = null;
  video.removeAttribute('src');
  video.srcObject = null;
  app.sourceKind = null;
  app.sourceFrames = 0;
  app.resetPending = true; // a new source starts from a zero state
}

async function useCamera() {
  stopSource();
  clearError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError('The camera needs a secure page (https, or http on localhost / 127.0.0.1): open the URL that ' +
              '`rvm web --serve` printed, or choose a local video file.');
    return;
  }
  try {
    app.stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  } catch (error) {
    const reasons = {
      NotAllowedError: 'Camera access was refused. Allow the camera for this page in the browser\'s site settings ' +
                       'and reload, or choose a local video file.',
      SecurityError: 'Camera access is blocked on this page. Allow the camera in the browser\'s site settings, ' +
                     'or choose a local video file.',
      NotFoundError: 'No camera was found. Connect one and reload, or choose a local video file.',
      NotReadableError: 'The camera is in use by another application. Close it and reload, or choose a local ' +
                        'video file.',
    };
    showError(reasons[error.name] || `The camera could not be opened (${messageOf(error)}): choose a local video file.`);
    return;
  }
  $('video').srcObject = app.stream;
  app.sourceKind = 'camera';
  await $('video').play();
}

async function useFile(file) {
  stopSource();
  clearError();
  const video = $('video');
  const cannotDecode = () => {
    stopSource();
    showError(`This browser cannot decode "${file.name}". Convert it to MP4 (H.264) or WebM (VP9), e.g. ` +
              '`ffmpeg -i input -c:v libvpx-vp9 output.webm`, then choose it again.');
  };
  app.objectUrl = URL.createObjectURL(file);
  video.onerror = cannotDecode;
  video.loop = true;
  video.src = app.objectUrl;
  app.sourceKind = 'file';
  try {
    await video.play();
  } catch (error) {
    if (error.name === 'NotSupportedError') cannotDecode();
    else if (error.name !== 'AbortError') showError(`"${file.name}" could not be played: ${messageOf(error)}`);
  }
}

// ---- the frame loop -----------------------------------------------------------------------------------

const input = document.createElement('canvas');
const inputContext = input.getContext('2d', {willReadFrequently: true});
const outputContext = $('output').getContext('2d');

function chosenRatio(width, height) {
  if ($('ratio-auto').checked) return Math.min(512 / Math.max(width, height), 1); // the official guidance
  const value = Number($('ratio').value);
  return value > 0 && value <= 1 ? value : 0.5;
}

function render({fgr, pha}, width, height) {
  const image = outputContext.createImageData(width, height);
  const pixels = image.data;
  for (let i = 0; i < width * height; i++) {
    pixels[4 * i] = fgr[3 * i] * 255;
    pixels[4 * i + 1] = fgr[3 * i + 1] * 255;
    pixels[4 * i + 2] = fgr[3 * i + 2] * 255;
    pixels[4 * i + 3] = pha[i] * 255;
  }
  // the backdrop behind the canvas is the background: colour, image or a transparency checkerboard
  outputContext.putImageData(image, 0, 0);
}

function showStats(width, height, ratio) {
  const recent = app.finished;
  const span = recent.length > 1 ? recent[recent.length - 1].at - recent[0].at : 0;
  const fps = span > 0 ? (1000 * (recent.length - 1)) / span : 0;
  const latency = recent.reduce((sum, frame) => sum + frame.latency, 0) / recent.length;
  $('fps').textContent = `${fps.toFixed(1)} frames/s`;
  $('latency').textContent = `${latency.toFixed(0)} ms a frame in the model`;
  $('size').textContent = `${width}×${height}`;
  $('ratio-used').textContent = `using ${ratio.toFixed(3)}`;
  return {fps, latency};
}

function base64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function floatsBase64(values) {
  return base64(new Uint8Array(Float32Array.from(values).buffer));
}

function record(rgba, output, width, height, ratio, latency) {
  const rgb = new Uint8Array(3 * width * height);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) rgb[3 * i + c] = rgba[4 * i + c];
  }
  const recording = app.recording;
  recording.frames.push({src: base64(rgb), pha: floatsBase64(output.pha), fgr: floatsBase64(output.fgr), latency});
  if (recording.frames.length === recording.count) {
    app.recording = null;
    recording.resolve({width, height, ratio, backend: app.engine.backend, frames: recording.frames});
  }
}

async function processFrame(video) {
  const [width, height] = [video.videoWidth, video.videoHeight];
  const ratio = chosenRatio(width, height);
  const key = `${width}x${height}@${ratio}`;
  if (input.width !== width || input.height !== height) {
    [input.width, input.height, $('output').width, $('output').height] = [width, height, width, height];
    $('backdrop').style.aspectRatio = $('video').style.aspectRatio = `${width} / ${height}`;
  }
  if (app.resetPending || key !== app.stateKey) {
    app.engine.reset();
    [app.resetPending, app.stateKey, app.framesSinceReset, app.finished] = [false, key, 0, []];
    if (app.pendingRecording) [app.recording, app.pendingRecording] = [app.pendingRecording, null];
  }
  inputContext.drawImage(video, 0, 0, width, height);
  const rgba = inputContext.getImageData(0, 0, width, height).data;
  const started = performance.now();
  const output = await app.engine.run(rgba, width, height, ratio);
  const latency = performance.now() - started;
  app.frames += 1;
  app.framesSinceReset += 1;
  app.sourceFrames += 1;
  render(output, width, height);
  app.finished = [...app.finished.slice(1 - STATS_WINDOW), {at: performance.now(), latency}];
  app.shown = showStats(width, height, ratio);
  if (app.recording) record(rgba, output, width, height, ratio, latency);
}

async function frameLoop() {
  const video = $('video');
  for (;;) {
    if (video.readyState >= 2 && !video.paused && video.videoWidth > 0) {
      try {
        await processFrame(video);
      } catch (error) {
        showError(`Matting failed: ${messageOf(error)}`);
        app.resetPending = true;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    await new Promise((resolve) => setTimeout(resolve, video.paused ? 50 : 0));
  }
}

// ---- controls -------------------------------------------------------------------------------------------

function reloadWith(changes) {
  const next = new URLSearchParams(location.search);
  Object.entries(changes).forEach(([key, value]) => next.set(key, value));
  location.search = next.toString();
}

function setBackground() {
  const kind = document.querySelector('input[name=background]:checked').value;
  const backdrop = $('backdrop');
  backdrop.className = kind;
  backdrop.style.backgroundColor = kind === 'colour' ? $('colour').value : '';
  backdrop.style.backgroundImage = kind === 'image' && app.backgroundUrl ? `url("${app.backgroundUrl}")` : '';
  if (kind === 'image' && !app.backgroundUrl) $('image').click();
}

function chooseBackgroundImage() {
  if (app.backgroundUrl) URL.revokeObjectURL(app.backgroundUrl);
  const image = $('image').files[0];
  app.backgroundUrl = image ? URL.createObjectURL(image) : null;
  document.querySelector('input[name=background][value=image]').checked = true;
  setBackground();
}

function setUpControls(models) {
  for (const model of models) $('model').add(new Option(`${model.name} (${ENGINE_TITLES[model.engine]})`, model.name));
  $('model').value = app.model.name;
  for (const backend of ['auto', ...BACKENDS[app.model.engine]]) $('backend').add(new Option(backend, backend));
  $('backend').value = params.get('backend') || 'auto';
  $('model').onchange = () => reloadWith({model: $('model').value, backend: 'auto'});
  $('backend').onchange = () => reloadWith({backend: $('backend').value});

  const ratio = params.get('ratio') || 'auto';
  $('ratio-auto').checked = ratio === 'auto';
  if (ratio !== 'auto') $('ratio').value = ratio;
  $('ratio').disabled = $('ratio-auto').checked;
  $('ratio-auto').onchange = () => { $('ratio').disabled = $('ratio-auto').checked; };

  for (const radio of document.querySelectorAll('input[name=source]')) {
    radio.onchange = () => {
      if (radio.value === 'camera') useCamera();
      else if ($('file').files[0]) useFile($('file').files[0]);
      else $('file').click();
    };
  }
  $('file').hidden = false;
  $('file').onchange = () => {
    if (!$('file').files[0]) return;
    document.querySelector('input[name=source][value=file]').checked = true;
    useFile($('file').files[0]);
  };
  $('image').hidden = false;
  for (const radio of document.querySelectorAll('input[name=background]')) radio.onchange = setBackground;
  $('colour').oninput = () => {
    document.querySelector('input[name=background][value=colour]').checked = true;
    setBackground();
  };
  $('image').onchange = chooseBackgroundImage;
  setBackground();
}

async function start() {
  let models;
  try {
    const answer = await fetch('models.json');
    if (!answer.ok) throw new Error(`models.json: HTTP ${answer.status}`);
    models = await answer.json();
  } catch (error) {
    throw new Error(`This page lists no models (${messageOf(error)}). Build it with \`rvm web MODEL...\` and open ` +
                    'the URL `rvm web --serve` prints: pages opened from disk cannot load models.');
  }
  const wanted = params.get('model');
  app.model = wanted ? models.find((model) => model.name === wanted) : models[0];
  if (!app.model) throw new Error(`No model "${wanted}" here: choose one of ${models.map((m) => m.name).join(', ')}`);
  setUpControls(models);
  $('engine-line').textContent = `loading ${app.model.name}…`;
  app.engine = await ENGINES[app.model.engine].open(app.model, params.get('backend') || 'auto');
  $('engine-line').textContent = `${app.engine.detail} · ${app.model.name}`;
  frameLoop();
  if ((params.get('source') || 'camera') === 'camera') await useCamera();
  return status();
}

function status() {
  return {
    model: app.model && app.model.name,
    engine: app.model && app.model.engine,
    backend: app.engine && app.engine.backend,
    detail: app.engine && app.engine.detail,
    source: app.sourceKind,
    frames: app.frames,
    framesSinceReset: app.framesSinceReset,
    sourceFrames: app.sourceFrames,
    fps: app.shown ? app.shown.fps : 0,
    latency: app.shown ? app.shown.latency : 0,
    crossOriginIsolated,
    error: app.error,
  };
}

const ready = start().catch((error) => {
  $('engine-line').textContent = 'not running';
  showError(messageOf(error));
  throw error;
});
ready.catch(() => {}); // shown on the page; the rejection stays for the test hook

window.rvm = {
  ready, // resolves to status() once the engine runs
  status,
  record: (count) => new Promise((resolve) => {
    app.pendingRecording = {count, frames: [], resolve};
    app.resetPending = true;
  }),
};
