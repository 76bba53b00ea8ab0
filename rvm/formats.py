"""The format registry: one declarative entry per artifact format.

An entry says what a format is (name, precisions, how its artifacts are named and recognised), where its code
lives (exporter and runtime entry points, as "module:attribute" strings so nothing heavy is imported here), what it
needs (pip extra, import names), what it accepts (static or dynamic shapes, option checks) and how close to PyTorch
fp32 it must stay (its row of `rvm.tolerances.TOLERANCES`, a `Tolerance` per precision). Export planning,
`Runtime.load`, parity, bench, the CLI choices and the tests are generated from `FORMATS`; generic code never
branches on a format's name.

The machinery (options, the entry type, `register`, lookups, planning) is small and sits beside the entries; the
bounds live in `rvm.tolerances`, the parity and bench rows built from the entries in `rvm.targets`.

Adding a format: its entry below, its bounds in `rvm/tolerances.py`, `exporters/<name>.py`, `runtimes/<name>.py`,
`tests/test_format_<name>.py` (docs/adding-a-format.md).
"""
import importlib
import importlib.util
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from rvm.errors import ArtifactError, BackendUnavailable, MissingDependency, RVMError, UsageError, brief
from rvm.metadata import METADATA_FILE, TFLITE_METADATA_NAME
from rvm.tolerances import TOLERANCES, Tolerance

Resolution = Tuple[int, int]  # (width, height)


# ---- machinery: options, the entry type, the registry ----------------------------------------------------


@dataclass(frozen=True)
class ExportOptions:
    """What an export may be asked for; each format reads the fields it uses and its `check` refuses the rest."""
    resolution: Optional[Resolution] = None  # fixed input size of a static artifact
    downsample_ratio: Optional[float] = None  # baked into static artifacts; elsewhere the validation ratio
    static: bool = False  # fixed resolution, ratio baked, every shape known
    simplify: bool = True  # ONNX graph simplification
    kind: Optional[str] = None  # a format's container when it has several (CoreML: mlmodel or mlpackage)
    calibration: Optional[str] = None  # clip or frame folder for int8 calibration
    validate: bool = True
    validation_frames: int = 8
    validation_clip: Optional[str] = None


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    precisions: Tuple[str, ...]  # the first is the default
    exporter: str  # "module:function", function(model, path, precision, options) writes the artifact at path
    runtime: str  # "module:Class", a Runtime subclass with from_path(path, device=..., **options)
    tolerances: Mapping[str, Tolerance]
    artifact_name: Callable[[str, str, ExportOptions], str]  # (variant, precision, options) -> file or folder name
    recognizes: Callable[[Path], bool]  # is this path an artifact of this format?
    # what a valid artifact is, for the error a corrupt or incomplete one gets ("an ONNX model file (.onnx)")
    artifact_description: str
    extra: Optional[str] = None  # pip extra that installs what the exporter needs (None: the base install)
    requires: Tuple[str, ...] = ()  # import names the exporter needs, checked before any work
    runtime_requires: Tuple[str, ...] = ()  # import names the runtime needs, checked when an artifact is loaded
    static: str = "optional"  # "never", "optional" or "always": fixed resolution with the ratio baked in
    check: Optional[Callable[[str, ExportOptions], None]] = None  # raises UsageError for a request it refuses
    # what this machine must have beyond the `requires` packages (a GPU): raises BackendUnavailable when absent.
    # Apart from `check`, which judges the request alone; `check_env` runs both availability checks
    probe: Optional[Callable[[], None]] = None
    variants: Callable[[ExportOptions], List[ExportOptions]] = lambda options: [options]  # what `all` writes
    runs_on: str = ""  # where its runtime can run, when not everywhere
    in_all: bool = True  # written by `--format all` (False for formats that need hardware most machines lack)
    in_bench: bool = True  # measured by `rvm bench` unless --backends says otherwise
    marks: Tuple[str, ...] = ()  # pytest markers of its generated tests: "macos", "gpu", "slow"
    io_layout: str = "NCHW"  # layout of frames and states in the artifact's I/O (the I/O spec of static artifacts)
    half_io: bool = True  # fp16 artifacts take and give fp16 frames and states (the ratio stays fp32)
    calibrated: Tuple[str, ...] = ()  # precisions whose export needs a calibration source (ExportOptions.calibration)
    static_rows: Tuple[str, ...] = ()  # precisions whose static artifact is a parity/bench row of its own

    def io_dtype(self, precision: str) -> str:
        """The dtype of frames and states at the artifact's inputs and outputs."""
        return "float16" if precision == "fp16" and self.half_io else "float32"

    def entry_point(self, which: str):
        module, attribute = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), attribute)

    def require(self, runtime: bool = False) -> None:
        """Raise MissingDependency, naming the extra, when a package the exporter (or the runtime) needs is absent."""
        for module in self.runtime_requires if runtime else self.requires:
            if importlib.util.find_spec(module) is None:
                what = f"the {self.title} runtime" if runtime else f"the {self.name} exporter"
                raise MissingDependency(what, self.extra or "all", module)

    def check_env(self) -> None:
        """Raise MissingDependency or BackendUnavailable when this machine cannot export the format: its packages
        (`require`), then its `probe`."""
        self.require()
        if self.probe is not None:
            self.probe()

    def load(self, path, device: str = "auto", **options):
        """Run the artifact at `path` with this format's runtime (a peer file may be run by another format's
        runtime than its suffix suggests: the official ONNX in OpenVINO).

        A path that does not exist, or that the backend cannot load (corrupt, truncated, empty, another format
        behind the right suffix), raises ArtifactError naming it and what was expected, chained to the backend's
        own error; errors of ours (a missing package, a backend this machine cannot run) and ImportError pass."""
        self.require(runtime=True)
        if not Path(path).exists():
            raise ArtifactError(f"{path} does not exist: expected {self.artifact_description}")
        runtime = self.entry_point("runtime")
        try:
            return runtime.from_path(path, device=device, **options)
        except (RVMError, ImportError):
            raise
        except Exception as error:
            raise self.invalid(path, brief(error)) from error

    def invalid(self, path, reason: str) -> ArtifactError:
        """The error for `path`, which is not a valid artifact of this format, because of `reason`."""
        return ArtifactError(f"{path} is not a valid {self.title} artifact (expected "
                             f"{self.artifact_description}): {reason}")

    def tolerance(self, precision: str, refiner: str = "deep_guided_filter", scene: bool = False) -> Tolerance:
        """The bounds on real footage, or on the sample scene (`scene=True`) that validation runs without a clip."""
        bounds = self.tolerances[precision]
        if scene and bounds.scene is not None:
            bounds = bounds.scene
        return bounds.for_refiner(refiner)

    def check_request(self, precision: str, options: ExportOptions) -> ExportOptions:
        """The options this export will run with, or a UsageError saying what to change."""
        if precision not in self.precisions:
            raise UsageError(f"{self.name} cannot be exported in {precision}: it supports {', '.join(self.precisions)}")
        if self.static == "always":
            options = replace(options, static=True)
        if options.static and self.static == "never":
            raise UsageError(f"{self.name} artifacts keep their shapes dynamic: drop --static, or choose a format "
                             f"that takes it ({', '.join(f.name for f in FORMATS.values() if f.static != 'never')})")
        if options.static and (options.resolution is None or options.downsample_ratio is None):
            needed = "static" if self.static == "optional" else "fixed-resolution"
            raise UsageError(f"{self.name} {needed} artifacts have the resolution and ratio baked in: "
                             f"pass --resolution WIDTHxHEIGHT and --downsample-ratio "
                             f"(e.g. --resolution 1920x1080 --downsample-ratio 0.25)")
        if options.downsample_ratio is not None and not 0 < options.downsample_ratio <= 1:
            raise UsageError(f"--downsample-ratio must be in (0, 1], got {options.downsample_ratio:g}")
        if self.check is not None:
            self.check(precision, options)
        return options


FORMATS: Dict[str, Format] = {}


def register(entry: Format) -> Format:
    if entry.name in FORMATS:
        raise ValueError(f"format {entry.name!r} is registered twice")
    missing = [p for p in entry.precisions if p not in entry.tolerances]
    if missing:
        raise ValueError(f"format {entry.name!r} has no tolerance for {', '.join(missing)}")
    FORMATS[entry.name] = entry
    return entry


# ---- artifact names and recognition ------------------------------------------------------------------------
# The files of folder artifacts, spelled once: their exporters write them, their runtimes and these recognisers read
# them (the metadata files are rvm.metadata's)
SAVED_MODEL_FILE = "saved_model.pb"  # TensorFlow's own name, written by its SavedModel writer
TFJS_MODEL_FILE = "model.json"  # the graph model's topology and weight manifest, written by the converter
OPENVINO_MODEL_FILE, OPENVINO_WEIGHTS_FILE = "model.xml", "model.bin"  # OpenVINO pairs an .xml with its .bin by stem
NCNN_PARAM_SUFFIX = ".ncnn.param"
NCNN_PARAM_FILE, NCNN_BIN_FILE = f"model{NCNN_PARAM_SUFFIX}", "model.ncnn.bin"
TENSORRT_ENGINE_FILE = "model.engine"


def _static_suffix(options: ExportOptions) -> str:
    if not options.static:
        return ""
    width, height = options.resolution
    return f"_{width}x{height}_s{options.downsample_ratio:g}"


def _suffixed(suffix: str, tag: str = "") -> Callable[[str, str, ExportOptions], str]:
    return lambda variant, precision, options: f"rvm_{variant}{tag}_{precision}{_static_suffix(options)}{suffix}"


def _has_suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda path: path.suffix.lower() in suffixes


def _is_torchscript(path: Path) -> bool:
    if path.suffix.lower() == ".torchscript":
        return True
    if path.suffix.lower() in (".pt", ".pth") and path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:  # TorchScript archives hold code/, checkpoints don't
            return any("/code/" in name for name in archive.namelist())
    return False


def _is_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_FILE).is_file()


def _is_tfjs(path: Path) -> bool:
    return path.name == TFJS_MODEL_FILE or (path / TFJS_MODEL_FILE).is_file()


def _is_openvino(path: Path) -> bool:
    return path.suffix.lower() == ".xml" or (path / OPENVINO_MODEL_FILE).is_file()


def _is_ncnn(path: Path) -> bool:
    return path.name.endswith(NCNN_PARAM_SUFFIX) or (path / NCNN_PARAM_FILE).is_file()


def _is_tensorrt(path: Path) -> bool:
    return path.suffix.lower() in (".engine", ".plan") or (path / TENSORRT_ENGINE_FILE).is_file()


def _coreml_name(variant: str, precision: str, options: ExportOptions) -> str:
    width, height = options.resolution
    return f"rvm_{variant}_{width}x{height}_s{options.downsample_ratio:g}_{precision}.{options.kind or 'mlmodel'}"


# ---- format-specific option checks, variants and probes -----------------------------------------------------
COREML_KINDS = ("mlmodel", "mlpackage")


def _check_coreml(precision: str, options: ExportOptions) -> None:
    kind = options.kind or COREML_KINDS[0]
    if kind not in COREML_KINDS:
        raise UsageError(f"a CoreML kind is mlmodel or mlpackage, got {kind!r}")
    if kind == "mlpackage" and precision != "fp16":
        raise UsageError("a CoreML .mlpackage (ML program) is exported in fp16 only: use --precision fp16")


def _no_kind(name: str) -> Callable[[str, ExportOptions], None]:
    def check(precision: str, options: ExportOptions) -> None:
        if options.kind is not None:
            raise UsageError(f"{name} has one container: drop --kind")
    return check


# the frames of a folder, in a calibration source here and in any folder rvm.media reads as a clip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def calibration_sources(text) -> List[Path]:
    """A calibration source is a clip or a folder of frames; several are joined by commas."""
    return [Path(part.strip()) for part in str(text).split(",") if part.strip()]


def _check_calibration(name: str) -> Callable[[str, ExportOptions], None]:
    """int8 needs calibration frames that exist; other precisions take none. Path checks only: the frames are
    read by the exporter."""
    no_kind = _no_kind(name)

    def check(precision: str, options: ExportOptions) -> None:
        no_kind(precision, options)
        if precision != "int8":
            if options.calibration:
                raise UsageError("--calibration applies to int8 exports only: drop it, or use --precision int8")
            return
        if not options.calibration:
            raise UsageError("int8 needs calibration frames: pass --calibration PATH (a clip or a folder of frames "
                             "of the footage you will matte, not the clip you validate on)")
        for source in calibration_sources(options.calibration):
            if not source.exists():
                raise UsageError(f"calibration source {source} does not exist: pass a clip or a folder of frames")
            if source.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.iterdir()):
                raise UsageError(f"calibration source {source} has no frames: pass a clip or a folder of images")
    return check


# the official CoreML downloads' configuration, used by `--format all` when no resolution is given
COREML_DEFAULT_RESOLUTION, COREML_DEFAULT_RATIO = (1920, 1080), 0.25


def _coreml_variants(options: ExportOptions) -> List[ExportOptions]:
    if options.resolution is None:
        options = replace(options, resolution=COREML_DEFAULT_RESOLUTION,
                          downsample_ratio=options.downsample_ratio or COREML_DEFAULT_RATIO)
    return [replace(options, kind=kind) for kind in COREML_KINDS]


def _when_sized(options: ExportOptions) -> List[ExportOptions]:
    """`--format all` writes a static-only mobile format only when a resolution and ratio are given: it is built
    for the device's camera size, and no size is the obvious default."""
    return [options] if options.resolution is not None and options.downsample_ratio is not None else []


def _probe_tensorrt() -> None:
    """TensorRT builds engines on an NVIDIA GPU only: a CUDA device, checked before any work (the package is in
    `requires`)."""
    import torch
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"TensorRT engines are built and run on an NVIDIA GPU: TensorRT is installed but "
                                 f"no CUDA device is visible (torch {torch.__version__})")


# ---- the entries, in the order FORMATS lists them (CLI choices, `all`, parity and bench rows) --------------
register(Format(
    name="torchscript", title="TorchScript", precisions=("fp32", "fp16"),
    exporter="rvm.exporters.torchscript:export_torchscript", runtime="rvm.runtimes.torchscript:TorchScriptRuntime",
    tolerances=TOLERANCES["torchscript"],
    artifact_name=_suffixed(".torchscript"), recognizes=_is_torchscript,
    artifact_description="a TorchScript archive from torch.jit.save (.torchscript, or a .pt/.pth zip with code/)",
    requires=("torch",),
    runtime_requires=("torch",), static="never",
    check=_no_kind("TorchScript")))

register(Format(
    # int8: QDQ post-training quantization calibrated with the state flowing (rvm.exporters.int8); static: one
    # resolution, ratio baked, every Resize on integer sizes, TensorRT-ready (rvm.exporters.tensorrt_check)
    name="onnx", title="ONNX Runtime", precisions=("fp32", "fp16", "int8"),
    exporter="rvm.exporters.onnx:export_onnx", runtime="rvm.runtimes.onnxruntime:OnnxRuntime",
    tolerances=TOLERANCES["onnx"],
    artifact_name=_suffixed(".onnx"), recognizes=_has_suffix(".onnx"),
    artifact_description="an ONNX model file (.onnx) with the RVM inputs and outputs", extra="onnx",
    requires=("onnx", "onnxruntime", "onnxsim"), runtime_requires=("onnxruntime",), static="optional",
    check=_check_calibration("ONNX"), calibrated=("int8",), static_rows=("fp32", "int8")))

register(Format(
    name="tf", title="TF SavedModel", precisions=("fp32",),
    exporter="rvm.exporters.tf:export_tf", runtime="rvm.runtimes.tensorflow:TensorflowRuntime",
    tolerances=TOLERANCES["tf"],
    artifact_name=lambda variant, precision, options: f"rvm_{variant}_tf", recognizes=_is_saved_model,
    artifact_description=f"a TF SavedModel folder with {SAVED_MODEL_FILE} and variables/",
    extra="tf", requires=("tensorflow",), runtime_requires=("tensorflow",), static="never",
    check=_no_kind("TF SavedModel")))

register(Format(
    # Weights stored uint8 where harmless and float16 elsewhere (mixed, the default), all uint8 (as the official
    # download) or all float16 (rvm.exporters.tfjs); TF.js computes in float32 whatever the storage
    name="tfjs", title="TF.js", precisions=("mixed", "int8", "fp16"),
    exporter="rvm.exporters.tfjs:export_tfjs", runtime="rvm.runtimes.tfjs:TfjsRuntime",
    tolerances=TOLERANCES["tfjs"],
    artifact_name=lambda variant, precision, options: f"rvm_{variant}_tfjs_{precision}", recognizes=_is_tfjs,
    artifact_description=f"a TF.js graph-model folder with {TFJS_MODEL_FILE} and the weight shards it lists",
    extra="tfjs", requires=("tensorflow", "tensorflowjs"), static="never", check=_no_kind("TF.js"), in_bench=False,
    runs_on="Node.js >= 18 with the runner's npm packages (make install)"))

register(Format(
    name="coreml", title="CoreML", precisions=("fp16", "int8"),
    exporter="rvm.exporters.coreml:export_coreml", runtime="rvm.runtimes.coreml:CoreMLRuntime",
    tolerances=TOLERANCES["coreml"],
    artifact_name=_coreml_name, recognizes=_has_suffix(".mlmodel", ".mlpackage"),
    artifact_description="a CoreML .mlmodel file or .mlpackage folder exported by rvm-toolkit", extra="coreml",
    requires=("coremltools",), runtime_requires=("coremltools",), static="always", check=_check_coreml,
    variants=_coreml_variants, half_io=False,
    in_bench=False, marks=("macos",),
    runs_on="macOS (elsewhere the spec is checked instead)"))

register(Format(
    # an IR folder converted from our ONNX graph; fp16 stores weights compressed, the I/O stays float32; int8 is
    # NNCF post-training quantization calibrated with the state flowing
    name="openvino", title="OpenVINO", precisions=("fp32", "fp16", "int8"),
    exporter="rvm.exporters.openvino:export_openvino", runtime="rvm.runtimes.openvino:OpenVinoRuntime",
    tolerances=TOLERANCES["openvino"],
    artifact_name=_suffixed("", "_openvino"), recognizes=_is_openvino,
    artifact_description=f"an OpenVINO IR folder with {OPENVINO_MODEL_FILE} and {OPENVINO_WEIGHTS_FILE} (or an .xml "
                         f"file beside its .bin)",
    extra="openvino",
    requires=("onnx", "onnxsim", "openvino", "nncf"), runtime_requires=("openvino",), static="optional",
    check=_check_calibration("OpenVINO"), half_io=False, calibrated=("int8",), static_rows=("fp32", "int8")))

register(Format(
    # our TF graph at one resolution, ratio baked, TFLite builtin ops only (the GPU delegate takes every op of the
    # fp32 and fp16 artifacts: rvm.exporters.tflite.gpu_incompatible_ops). fp16: fp16 weights (what the GPU
    # delegate runs), float I/O; int8-dynamic: int8 weights, float activations; int8: full integer, activations
    # and states calibrated with the state flowing (rvm.exporters.int8), float I/O
    name="tflite", title="TFLite (LiteRT)", precisions=("fp32", "fp16", "int8", "int8-dynamic"),
    exporter="rvm.exporters.tflite:export_tflite", runtime="rvm.runtimes.tflite:TFLiteRuntime",
    tolerances=TOLERANCES["tflite"],
    artifact_name=_suffixed(".tflite"), recognizes=_has_suffix(".tflite"),
    artifact_description=f"a TFLite flatbuffer (.tflite) exported by rvm-toolkit, with its {TFLITE_METADATA_NAME} "
                         "entry",
    extra="tflite",
    requires=("tensorflow", "ai_edge_litert"), runtime_requires=("ai_edge_litert",), static="always",
    check=_check_calibration("TFLite"), variants=_when_sized, io_layout="NHWC", half_io=False,
    calibrated=("int8",)))

register(Format(
    # pnnx traces the reference model at one resolution, ratio baked, into a folder (param, bin, metadata).
    # fp16: fp16 weights, and ncnn's fp16 storage and arithmetic on; I/O float32 either way
    name="ncnn", title="NCNN", precisions=("fp32", "fp16"),
    exporter="rvm.exporters.ncnn:export_ncnn", runtime="rvm.runtimes.ncnn:NcnnRuntime",
    tolerances=TOLERANCES["ncnn"],
    artifact_name=_suffixed("", "_ncnn"), recognizes=_is_ncnn,
    artifact_description=f"an NCNN folder with {NCNN_PARAM_FILE}, {NCNN_BIN_FILE} and {METADATA_FILE}",
    extra="ncnn", requires=("pnnx", "ncnn"),
    runtime_requires=("ncnn",), static="always", check=_no_kind("NCNN"), variants=_when_sized, half_io=False))

register(Format(
    # torch.export of the reference model at one resolution, ratio baked, states at their true shapes, lowered with
    # the XNNPACK partitioner into one .pte (every op delegated: rvm.exporters.executorch.delegation_report); the
    # metadata is the program's `rvm_metadata` constant method. int8: PT2E with XNNPACK's quantizer, calibrated
    # with the state flowing, KEEP_FP32's layers in float; I/O float32 either way
    name="executorch", title="ExecuTorch", precisions=("fp32", "int8"),
    exporter="rvm.exporters.executorch:export_executorch", runtime="rvm.runtimes.executorch:ExecuTorchRuntime",
    tolerances=TOLERANCES["executorch"],
    artifact_name=_suffixed(".pte"), recognizes=_has_suffix(".pte"),
    artifact_description="an ExecuTorch program (.pte) exported by rvm-toolkit, with its rvm_metadata method",
    extra="executorch", requires=("executorch", "torchao"), runtime_requires=("executorch",), static="always",
    check=_check_calibration("ExecuTorch"), variants=_when_sized, half_io=False, calibrated=("int8",)))

register(Format(
    # our ONNX graph (dynamic, or the static profile) through MNN's converter, metadata in the model's bizCode.
    # fp16: fp16 weights, float32 compute and I/O on x86; int8: MNN's offline quantization (int8 convolutions)
    # calibrated with the state flowing, every convolution int8 (rvm.exporters.mnn)
    name="mnn", title="MNN", precisions=("fp32", "fp16", "int8"),
    exporter="rvm.exporters.mnn:export_mnn", runtime="rvm.runtimes.mnn:MnnRuntime",
    tolerances=TOLERANCES["mnn"],
    artifact_name=_suffixed(".mnn"), recognizes=_has_suffix(".mnn"),
    artifact_description="an MNN model file (.mnn) with the RVM inputs and outputs", extra="mnn",
    requires=("MNN", "onnx", "onnxsim"), runtime_requires=("MNN",), static="optional",
    check=_check_calibration("MNN"), half_io=False, calibrated=("int8",)))

register(Format(
    # a serialized engine built from the static ONNX profile (rvm.exporters.onnx), in a folder with its
    # metadata; the state stays on the GPU between frames. fp32 turns TF32 off
    name="tensorrt", title="TensorRT", precisions=("fp16", "fp32"),
    exporter="rvm.exporters.tensorrt:export_tensorrt", runtime="rvm.runtimes.tensorrt:TensorRTRuntime",
    tolerances=TOLERANCES["tensorrt"],
    artifact_name=_suffixed("", "_tensorrt"), recognizes=_is_tensorrt,
    artifact_description=f"a TensorRT folder with {TENSORRT_ENGINE_FILE} and {METADATA_FILE}", extra="tensorrt",
    requires=("tensorrt", "onnx", "onnxsim"), runtime_requires=("tensorrt", "torch"), static="always",
    check=_no_kind("TensorRT"), probe=_probe_tensorrt, half_io=False, in_all=False, marks=("gpu",),
    runs_on="an NVIDIA GPU with CUDA and TensorRT ([tensorrt] extra)"))


# ---- lookups -----------------------------------------------------------------------------------------------
def get(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}") from None


def detect(path) -> Optional[Format]:
    """The format of an artifact at `path`, or None (a checkpoint or something else)."""
    path = Path(path)
    for entry in FORMATS.values():
        if entry.recognizes(path):
            return entry
    return None


@dataclass(frozen=True)
class ExportJob:
    format: Format
    precision: str
    options: ExportOptions = field(default_factory=ExportOptions)


def plan(fmt: str, precision: Optional[str] = None, options: Optional[ExportOptions] = None) -> List[ExportJob]:
    """The exports asked for, every one checked before any work starts. `fmt='all'` means every format in
    `[all]` and each of its precisions and variants, narrowed to `precision` when one is named (and to the formats
    that take `static` when it is set); combinations a format refuses (an int8 .mlpackage) are left out."""
    options = options or ExportOptions()
    if fmt != "all":
        entry = get(fmt)
        jobs = [ExportJob(entry, precision or entry.precisions[0], options)]
    else:
        jobs = [ExportJob(entry, p, variant) for entry in FORMATS.values()
                if entry.in_all and not (options.static and entry.static == "never")
                for variant in entry.variants(options) for p in entry.precisions
                if precision in (None, p) and _format_accepts(entry, p, variant)]
        if not jobs:
            raise UsageError(f"no format can be exported in {precision}")
    checked = [replace(job, options=job.format.check_request(job.precision, job.options)) for job in jobs]
    for entry in {job.format.name: job.format for job in checked}.values():  # the request first, then the machine
        entry.check_env()
    return checked


def _format_accepts(entry: Format, precision: str, options: ExportOptions) -> bool:
    try:
        if entry.check is not None:
            entry.check(precision, options)
    except UsageError:
        return False
    return True
