"""`rvm env`: what a bug report needs first, as `optimum-cli env` and MMDeploy's `check_env` give it.

The toolkit's version and install path; Python and the OS; torch with the kernel paths it picks on this CPU (ATen's
capability, oneDNN) and its threads; the version of every backend package the registry's formats need, read from
package metadata without importing the package; TF's oneDNN setting; Node.js and the npm packages of the TF.js
runner and the web page; Chromium; the CPU (model, cores, the instruction sets the kernels key on) and memory;
GPUs; and for each registered format whether it can export and run here, and why not.

`collect()` is the report as a dict (what `--json` prints); `to_text()` renders it. Every probe is wrapped: one
that fails shows as `unknown (reason)` and the rest still run. Generated from `rvm.formats.FORMATS`: nothing here
branches on a format's name.
"""
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from rvm import formats
from rvm.errors import BackendUnavailable, MissingDependency, MissingNodePackages
from rvm.machine import KERNEL_ENV_VARS, Unknown, cpu, gpus, memory, packages, probe, python, run_command, system
from rvm.version import __version__

ENV_VARS = (*KERNEL_ENV_VARS, "RVM_CHECKPOINT_DIR", "RVM_VALIDATION_CLIP", "RVM_ARTIFACT_STORE")


# ---- the toolkit, Python, the OS ----------------------------------------------------------------------------
def toolkit() -> Dict[str, Any]:
    return {"version": __version__, "path": str(Path(__file__).resolve().parents[1])}  # the rvm package


def environment() -> Dict[str, str]:
    return {name: os.environ[name] for name in ENV_VARS if name in os.environ}


def artifact_store() -> Dict[str, Any]:
    """The artifact store parity, bench and tune take their exports from (`rvm env --clear-artifacts` empties it)."""
    from rvm.exporters.store import ArtifactStore
    store = ArtifactStore()
    return {"path": str(store.root), "entries": sum(1 for _ in store.entries()),
            "size_mib": round(store.size_bytes() / 2 ** 20, 1)}


# ---- CPU and memory -----------------------------------------------------------------------------------------
# ---- torch, packages, TF ------------------------------------------------------------------------------------
def torch_info() -> Dict[str, Any]:
    import torch  # a base dependency, and the reference every format is measured against
    info: Dict[str, Any] = {"version": torch.__version__,
                            "cuda_build": torch.version.cuda,
                            "aten_cpu_capability": probe(torch.backends.cpu.get_cpu_capability),
                            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
                            "mkldnn_available": probe(torch.backends.mkldnn.is_available),
                            "threads": torch.get_num_threads(),
                            "interop_threads": torch.get_num_interop_threads()}
    return info


def tensorflow_onednn() -> str:
    """TF's oneDNN setting, without importing TF: oneDNN ops are on by default in TF >= 2.9 on x86 CPUs."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if value is not None:
        return f"TF_ENABLE_ONEDNN_OPTS={value}"
    return "default (on for x86)"


def onnxruntime_providers() -> List[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        raise Unknown("onnxruntime is not installed")
    import onnxruntime  # ~0.2 s
    return onnxruntime.get_available_providers()


# ---- Node.js, npm packages, Chromium ------------------------------------------------------------------------
def node() -> Dict[str, Any]:
    from rvm.runtimes import tfjs
    from rvm.web import site as web
    info: Dict[str, Any] = {"version": probe(lambda: run_command("node", "--version")),
                            "path": shutil.which("node")}
    if info["path"] is None:
        info["version"] = {"unknown": "`node` is not on PATH: install Node.js 18+ for the TF.js runtime, its "
                                      "export validation and the `rvm web` tests"}
    # the runtime's and the page's own checks, so the fix is the command they would print
    info["tfjs_runner_packages"] = _installed(tfjs.check_runner_packages)
    info["web_page_packages"] = _installed(lambda: web.vendor_files(web.VENDOR_FILES))
    return info


def _installed(check: Callable[[], Any]) -> Dict[str, Any]:
    try:
        check()
    except MissingNodePackages as missing:
        return {"installed": False, "fix": str(missing)}
    return {"installed": True}


CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium() -> Dict[str, Any]:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return {"path": path, "version": probe(lambda: run_command(path, "--version"))}
    raise Unknown(f"none of {', '.join(CHROMIUM_NAMES)} is on PATH; the browser tests drive Debian's `chromium`")


# ---- GPUs ---------------------------------------------------------------------------------------------------
# ---- formats ------------------------------------------------------------------------------------------------
def format_status(entry: formats.Format) -> Dict[str, Any]:
    """Whether this format's exporter and runtime have what they need here, and why not; `runs_on` when its
    runtime needs more than packages (an OS, a GPU, Node.js)."""
    status: Dict[str, Any] = {"title": entry.title, "extra": entry.extra, "precisions": list(entry.precisions)}
    try:
        entry.check_env()  # packages, then what the format probes on the machine (a GPU)
        status["export"], status["export_reason"] = True, None
    except (MissingDependency, BackendUnavailable) as error:
        status["export"], status["export_reason"] = False, str(error)
    try:
        entry.require(runtime=True)
        status["runtime"], status["runtime_reason"] = True, None
    except MissingDependency as error:
        status["runtime"], status["runtime_reason"] = False, str(error)
    status["runs_on"] = entry.runs_on or None
    return status


def format_statuses() -> Dict[str, Any]:
    return {name: probe(lambda entry=entry: format_status(entry)) for name, entry in formats.FORMATS.items()}


# ---- the report ---------------------------------------------------------------------------------------------
PROBES: Sequence[Tuple[str, Callable[[], Any]]] = (
    ("rvm_toolkit", toolkit), ("python", python), ("system", system), ("cpu", cpu), ("memory", memory),
    ("torch", torch_info), ("packages", packages), ("tensorflow_onednn", tensorflow_onednn),
    ("onnxruntime_providers", onnxruntime_providers), ("node", node), ("chromium", chromium), ("gpus", gpus),
    ("formats", format_statuses), ("artifact_store", artifact_store), ("environment", environment))


def collect() -> Dict[str, Any]:
    """The report: one key per probe, each value what it found or `{"unknown": reason}`."""
    return {key: probe(function) for key, function in PROBES}


def _show(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"unknown"}:
        return f"unknown ({value['unknown']})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _section(title: str, rows: Sequence[Tuple[str, Any]]) -> List[str]:
    width = max((len(key) for key, _ in rows), default=0)
    return [title] + [f"  {key:<{width}}  {_show(value)}" for key, value in rows] + [""]


def _fields(report: Dict[str, Any], key: str, fields: Sequence[Tuple[str, str]]) -> List[Tuple[str, Any]]:
    value = report.get(key)
    if not isinstance(value, dict) or set(value) == {"unknown"}:
        return [(key, value)]
    return [(label, value.get(name)) for label, name in fields if name in value]


def to_text(report: Dict[str, Any]) -> str:
    """The report as sections of aligned lines, for a terminal or a bug report."""
    lines: List[str] = []
    lines += _section("rvm-toolkit", _fields(report, "rvm_toolkit", [("version", "version"), ("path", "path")]))
    lines += _section("Python", _fields(report, "python", [("version", "version"), ("implementation", "implementation"),
                                                           ("executable", "executable")]))
    lines += _section("System", _fields(report, "system", [("platform", "platform"), ("os", "distribution"),
                                                           ("machine", "machine")]))
    lines += _section("CPU", _fields(report, "cpu", [("model", "model"), ("logical cores", "logical_cores"),
                                                     ("usable cores", "usable_cores"), ("flags", "flags")])
                      + [("memory", _memory_text(report.get("memory")))])
    lines += _section("PyTorch", _fields(report, "torch", [
        ("version", "version"), ("CUDA build", "cuda_build"), ("ATen CPU capability", "aten_cpu_capability"),
        ("ATEN_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY"), ("oneDNN (mkldnn)", "mkldnn_available"),
        ("threads", "threads"), ("interop threads", "interop_threads")]))
    lines += _section("Packages", _package_rows(report.get("packages"))
                      + [("TF oneDNN", report.get("tensorflow_onednn")),
                         ("ORT providers", report.get("onnxruntime_providers"))])
    lines += _section("Node.js and Chromium", _node_rows(report))
    lines += _section("GPUs", _gpu_rows(report.get("gpus")))
    lines += _format_lines(report.get("formats"))
    lines += _section("Artifact store", _fields(report, "artifact_store", [("path", "path"), ("entries", "entries"),
                                                                          ("size (MiB)", "size_mib")]))
    environment_value = report.get("environment")
    if isinstance(environment_value, dict) and set(environment_value) != {"unknown"}:
        lines += _section("Environment", sorted(environment_value.items()) or [("none set of", ", ".join(ENV_VARS))])
    else:
        lines += _section("Environment", [("environment", environment_value)])
    return "\n".join(lines).rstrip() + "\n"


def _memory_text(value: Any) -> Any:
    if isinstance(value, dict) and "total_gib" in value:
        return f"{value['total_gib']} GiB"
    return value


def _package_rows(value: Any) -> List[Tuple[str, Any]]:
    if not isinstance(value, dict) or set(value) == {"unknown"}:
        return [("packages", value)]
    rows = []
    for name, info in value.items():
        shown = info.get("version") if isinstance(info, dict) and "version" in info else info
        names = list(info.get("distributions", {})) if isinstance(info, dict) else []
        if names and names != [name]:
            shown = f"{shown} ({', '.join(names)})"
        rows.append((name, shown))
    return rows


def _node_rows(report: Dict[str, Any]) -> List[Tuple[str, Any]]:
    value = report.get("node")
    if not isinstance(value, dict) or set(value) == {"unknown"}:
        rows = [("node", value)]
    else:
        rows = [("node", value.get("version"))]
        for label, key in (("TF.js runner npm", "tfjs_runner_packages"), ("web page npm", "web_page_packages")):
            info = value.get(key)
            if isinstance(info, dict) and "installed" in info:
                info = "installed" if info["installed"] else f"not installed: {info.get('fix')}"
            rows.append((label, info))
    browser = report.get("chromium")
    if isinstance(browser, dict) and "path" in browser:
        browser = f"{_show(browser.get('version'))} ({browser['path']})"
    return rows + [("chromium", browser)]


def _gpu_rows(value: Any) -> List[Tuple[str, Any]]:
    if not isinstance(value, dict) or set(value) == {"unknown"}:
        return [("gpus", value)]
    rows: List[Tuple[str, Any]] = [(f"{index}", ", ".join(f"{k} {v}" if k != "name" else v for k, v in device.items()))
                                   for index, device in enumerate(value.get("devices", []))]
    if not rows:
        rows = [("devices", "none")]
    rows.append(("seen by", value.get("source")))
    if value.get("nvidia_smi"):
        rows.append(("nvidia-smi", {"unknown": value["nvidia_smi"]}))
    return rows


def _format_lines(value: Any) -> List[str]:
    if not isinstance(value, dict) or set(value) == {"unknown"}:
        return _section("Formats", [("formats", value)])
    width = max(len(name) for name in value)
    lines = ["Formats (export / runtime available here)"]
    for name, status in value.items():
        if not isinstance(status, dict) or "export" not in status:
            lines.append(f"  {name:<{width}}  {_show(status)}")
            continue
        lines.append(f"  {name:<{width}}  export {_show(status['export']):<3}  runtime {_show(status['runtime'])}")
        notes = [status["export_reason"]]
        if status["runtime_reason"] != status["export_reason"]:
            notes.append(status["runtime_reason"])
        if status.get("runs_on"):
            notes.append(f"runs on {status['runs_on']}")
        lines += [f"  {'':<{width}}    {note}" for note in notes if note]
    return lines + [""]


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    parser.add_argument("--clear-artifacts", action="store_true",
                        help="empty the artifact store first (exports parity, bench and tune reuse; a tuning "
                             "record keeps its own copies of the artifacts it chose)")


def command(args) -> int:
    if args.clear_artifacts:
        from rvm.exporters.store import ArtifactStore
        ArtifactStore().clear()
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(to_text(report), end="")
    return 0
