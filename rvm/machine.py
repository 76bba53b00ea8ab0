"""Facts about this machine and its installed packages, read without importing the packages: Python and the OS, the
CPU (model, cores, the instruction sets kernels dispatch on), memory, GPUs, package versions. `rvm env` reports them;
a tuning record (`rvm.tuning`) keys on them, so a record made on another CPU, GPU or package set is never reused;
`summary()` is the machine in brief that `rvm bench` and `rvm parity` results carry.

Every probe that can fail raises `Unknown` with the reason; `probe(f)` turns that into `{"unknown": reason}`.
"""
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from rvm import formats
from rvm.errors import one_line

# settings that change which kernels run or how many threads they get
KERNEL_ENV_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS",
                   "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
# packages worth a line whether or not a format names them (video I/O, batch, browser tests, converters)
KNOWN_PACKAGES = ("numpy", "av", "onnxruntime", "onnx", "onnxsim", "numba", "tensorflow", "tensorflowjs", "coremltools",
                  "openvino", "nncf", "ai_edge_litert", "pnnx", "ncnn", "tensorrt", "ray", "playwright")
# CPU features the kernels of torch, oneDNN, ONNX Runtime, XNNPACK and OpenVINO dispatch on (/proc/cpuinfo names;
# macOS sysctl names are lowered to match)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd",
             "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16")
COMMAND_TIMEOUT = 10  # seconds for each external command (node, chromium, nvidia-smi)


class Unknown(Exception):
    """A probe that could not answer; the message says why."""


def probe(function: Callable[[], Any]) -> Any:
    """`function()`, or `{"unknown": reason}` when it raises: one failing probe never hides the others."""
    try:
        return function()
    except Exception as error:  # a probe of someone else's package can fail in any way
        return {"unknown": str(error) if isinstance(error, Unknown) else one_line(error)}


def run_command(*command: str) -> str:
    """The first line of a command's output; Unknown when it is absent, fails or hangs."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise Unknown(f"`{command[0]}` is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise Unknown(f"`{' '.join(command)}` did not answer in {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise Unknown(f"`{' '.join(command)}` exited {done.returncode}" + (f": {message[-1]}" if message else ""))
    return done.stdout.strip()


def python() -> Dict[str, Any]:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def system() -> Dict[str, Any]:
    info = {"platform": platform.platform(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine()}
    if platform.system() == "Linux":
        os_release = Path("/etc/os-release")
        if os_release.is_file():
            fields = dict(line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line)
            if "PRETTY_NAME" in fields:
                info["distribution"] = fields["PRETTY_NAME"].strip('"')
    elif platform.system() == "Darwin":
        info["distribution"] = f"macOS {platform.mac_ver()[0]}"
    return info


def _cpuinfo() -> Tuple[Optional[str], List[str]]:
    """(model, flags) from /proc/cpuinfo: x86 `model name`/`flags`, Arm `Features` (and no model name on many)."""
    model, flags = None, []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model", "processor") and \
                not value.strip().isdigit() and value.strip():
            model = value.strip()
        elif not flags and key in ("flags", "features"):
            flags = value.split()
    return model, flags


def _sysctl(name: str) -> str:
    return run_command("sysctl", "-n", name)


def cpu() -> Dict[str, Any]:
    info: Dict[str, Any] = {"machine": platform.machine(), "logical_cores": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))  # a container or taskset may give fewer
    all_flags: List[str] = []
    if Path("/proc/cpuinfo").is_file():
        model, all_flags = _cpuinfo()
        info["model"] = model or platform.processor() or "unknown (no model name in /proc/cpuinfo)"
    elif platform.system() == "Darwin":
        info["model"] = probe(lambda: _sysctl("machdep.cpu.brand_string"))
        for name in ("machdep.cpu.features", "machdep.cpu.leaf7_features"):  # Intel Macs
            try:
                all_flags += _sysctl(name).lower().replace(".", "_").split()
            except Unknown:
                pass
        if platform.machine() == "arm64":
            all_flags.append("neon")  # every Apple silicon core has it
            for feature in ("bf16", "i8mm"):
                try:
                    if _sysctl(f"hw.optional.arm.FEAT_{feature.upper()}") == "1":
                        all_flags.append(feature)
                except Unknown:
                    pass
    else:
        info["model"] = platform.processor() or "unknown (no /proc/cpuinfo or sysctl here)"
    present = set(all_flags)
    info["flags"] = [flag for flag in CPU_FLAGS if flag in present]
    return info


def memory() -> Dict[str, Any]:
    if Path("/proc/meminfo").is_file():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return {"total_gib": round(int(line.split()[1]) / 2 ** 20, 1)}
    if platform.system() == "Darwin":
        return {"total_gib": round(int(_sysctl("hw.memsize")) / 2 ** 30, 1)}
    return {"total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)}


def package_names() -> List[str]:
    """Every import name a registered format needs, then the known ones, each once."""
    names = [module for entry in formats.FORMATS.values() for module in (*entry.requires, *entry.runtime_requires)]
    return list(dict.fromkeys([*names, *KNOWN_PACKAGES]))


def package(name: str, distributions: Dict[str, List[str]]) -> Dict[str, Any]:
    """An import name's installed distribution(s) and version, from metadata: the package is not imported."""
    if importlib.util.find_spec(name) is None:
        return {"installed": False, "version": "not installed"}
    versions = {}
    for distribution in dict.fromkeys(distributions.get(name, [])):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    if not versions:
        return {"installed": True, "version": "installed (no package metadata)"}
    return {"installed": True, "version": ", ".join(versions.values()), "distributions": versions}


def packages() -> Dict[str, Any]:
    distributions = importlib.metadata.packages_distributions()
    return {name: probe(lambda name=name: package(name, distributions)) for name in package_names()}


def gpus() -> Dict[str, Any]:
    """nvidia-smi's view when it is there, else what torch sees (CUDA, Apple MPS)."""
    failed = None
    if shutil.which("nvidia-smi"):
        try:
            lines = run_command("nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader").splitlines()
            devices = [dict(zip(("name", "driver", "memory"), (part.strip() for part in line.split(","))))
                       for line in lines if line.strip()]
            return {"source": "nvidia-smi", "devices": devices}
        except Unknown as error:
            failed = str(error)
    import torch
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            devices.append({"name": properties.name, "memory": f"{properties.total_memory / 2 ** 30:.1f} GiB"})
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append({"name": "Apple MPS"})
    info: Dict[str, Any] = {"source": "torch", "devices": devices}
    if failed:
        info["nvidia_smi"] = failed
    return info


def summary() -> Dict[str, Any]:
    """The machine in brief, the "machine" of `rvm bench` and `rvm parity` results: platform, Python, CPU model and
    cores, torch, the GPU torch sees, and the onnxruntime and tensorflow versions (None when not installed)."""
    import torch
    processor = cpu()
    model = processor["model"]
    info = {"platform": system()["platform"], "python": python()["version"],
            "cpu": model if isinstance(model, str) else "unknown", "cores": processor["logical_cores"],
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    distributions = importlib.metadata.packages_distributions()
    for name in ("onnxruntime", "tensorflow"):  # from metadata: importing tensorflow takes seconds
        found = package(name, distributions)
        info[name] = found["version"] if found["installed"] else None
    return info
