"""The structure holds: packages depend downward only (imports and "module:attribute" strings) and have no import
cycle, the wheel claims only `rvm`, a user's own `models/`, `runtimes/` or `exporters/` cannot shadow ours, and every
registered format is complete."""
import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rvm import formats
from rvm.targets import REFERENCE
from rvm.tolerances import fp32_tolerance

from .conftest import CLIPS, WEIGHTS, need

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> import name (pyproject's package-dir)
PACKAGES = {"rvm": "rvm", "exporters": "rvm.exporters", "runtimes": "rvm.runtimes", "models": "rvm.models"}

# The layers, bottom up, as folders: a module's layer is that of the innermost listed package holding it (modules
# directly in rvm/, and its unlisted subpackages such as rvm.model, are the foundation). An import may only reach
# its own layer or one below.
LAYERS = [
    ("foundation", ["rvm"]),
    ("runtimes and media", ["rvm.runtimes", "rvm.media"]),
    ("exporters", ["rvm.exporters"]),
    ("measure, batch, web and live", ["rvm.measure", "rvm.batch", "rvm.web", "rvm.live"]),
    ("commands", ["rvm.commands"]),
]


def module_files():
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), path


MODULES = dict(module_files())


# A string constant "rvm.package.module:attribute" names code that importlib loads at run time: an edge like an
# import. The registry's declared plugin mechanism is exempt: a `Format(...)` names its format's exporter and runtime
# in these fields, and rvm.targets.REFERENCE the checkpoints' runtime, without importing them (`Format.entry_point`).
STRING_REFERENCE = re.compile(r"(rvm(?:\.\w+)+):[A-Za-z_]\w*")
PLUGIN_FIELDS = ("exporter", "runtime")
PLUGIN_CONSTANTS = ("REFERENCE",)


def declared_plugins(tree) -> set:
    """The string constants of `tree` that are declared plugin references (PLUGIN_FIELDS, PLUGIN_CONSTANTS)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Format":
            found |= {keyword.value for keyword in node.keywords if keyword.arg in PLUGIN_FIELDS}
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in PLUGIN_CONSTANTS for t in node.targets):
            found |= {part for part in ast.walk(node.value) if isinstance(part, ast.Constant)}
    return found


def string_references(tree) -> set:
    """(reference, module) of every "module:attribute" string constant naming an rvm module, plugins excepted."""
    plugins = declared_plugins(tree)
    return {(node.value, match.group(1)) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in plugins
            and (match := STRING_REFERENCE.fullmatch(node.value)) and match.group(1) in MODULES}


def imports_of(name: str, path: Path):
    """Every rvm module `name` imports, at module level or inside functions, or names in a "module:attribute"
    string (`string_references`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    named = [[module for _, module in string_references(tree)]]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.append([alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when one exists
            named.append([f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                          for alias in node.names])
    for target in (target for targets in named for target in targets):
        while target and target not in MODULES:  # `rvm.model.decoder.X` -> the module that holds X
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
            # importing a submodule runs its packages' __init__ first: those of other packages are edges too
            # (the lazy `rvm` package, and this module's own packages, already running, excepted)
            parent = target.rpartition(".")[0]
            while parent and parent != "rvm":
                if not (name == parent or name.startswith(parent + ".")):
                    found.add(parent)
                parent = parent.rpartition(".")[0]
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer_of(name: str) -> int:
    holders = [(len(package), index) for index, (_, packages) in enumerate(LAYERS) for package in packages
               if name == package or name.startswith(package + ".")]
    assert holders, f"{name} is outside the rvm package"
    return max(holders)[1]


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_layers_are_folders_and_the_wheel_ships_each():
    """Each listed package is a folder of the repository, and pyproject's package list is exactly the packages
    on disk (a new folder cannot be left out of the wheel, nor a removed one linger)."""
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert {package for _, listed in LAYERS for package in listed} <= packages
    text = (ROOT / "pyproject.toml").read_text()
    listed = text[text.index("packages = ["):].split("]", 1)[0]
    assert set(re.findall(r'"([\w.]+)"', listed)) == packages


def test_imports_only_go_down():
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for name, targets in GRAPH.items() for target in sorted(targets) if layer_of(target) > layer_of(name)]
    assert not upward, "\n".join(upward)


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None
    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_string_references_are_edges_and_only_the_registry_plugins_are_exempt(tmp_path):
    source = tmp_path / "lower.py"
    source.write_text('"""Mentions "rvm.measure.tune:tune" in a sentence."""\n'
                      'TUNER = "rvm.measure.tune:tune"\n'
                      'REFERENCE = Reference("pytorch", "fp32", "rvm.runtimes.pytorch:PyTorchRuntime")\n'
                      'register(Format(name="x", exporter="rvm.exporters.onnx:export_onnx",\n'
                      '                runtime="rvm.runtimes.onnxruntime:OnnxRuntime", title="rvm.batch.jobs:Job"))\n'
                      'NOT_A_MODULE = "rvm.nonesuch:f"\n')
    assert string_references(ast.parse(source.read_text())) == {("rvm.measure.tune:tune", "rvm.measure.tune"),
                                                                ("rvm.batch.jobs:Job", "rvm.batch.jobs")}
    assert imports_of("rvm.lower", source) == {"rvm.measure.tune", "rvm.measure", "rvm.batch.jobs", "rvm.batch"}


def test_the_exempt_plugin_references_are_the_registry_entries():
    """What PLUGIN_FIELDS and PLUGIN_CONSTANTS exempt is exactly the registry's entry points."""
    exempt = {node.value for path in MODULES.values() for node in declared_plugins(ast.parse(path.read_text()))
              if isinstance(node, ast.Constant) and STRING_REFERENCE.fullmatch(str(node.value))}
    registered = {getattr(entry, field) for entry in formats.FORMATS.values() for field in PLUGIN_FIELDS}
    assert exempt == registered | {REFERENCE.runtime}


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_public_api_works_beside_a_users_own_models_runtimes_and_exporters(tmp_path):
    for name in ("models", "runtimes", "exporters"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package')\n")
    script = (
        "import numpy as np\n"
        "from rvm import Runtime, load_model, export, ExportOptions\n"
        "model = load_model('rvm_mobilenetv3')\n"
        "path = export(model, 'onnx', 'fp32', 'out', options=ExportOptions(validate=False))\n"
        "runtime = Runtime.load(path)\n"
        "out = runtime.step(np.zeros((64, 96, 3), np.uint8), 0.5)\n"
        "assert out['pha'].shape == (64, 96, 1)\n"
        "import models, sys\n")
    env = {**os.environ, "RVM_CHECKPOINT_DIR": str(need(WEIGHTS)), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    # the script ran to its last line, where the user's own package is the one imported
    assert "the user's own models package" in done.stderr, done.stderr[-2000:]
    assert (tmp_path / "out" / "rvm_mobilenetv3_fp32.onnx").is_file()


@pytest.mark.slow
def test_wheel_installs_rvm_only(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("rvm_toolkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["rvm"]
    packaged = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packaged == {"rvm"}
    for needed in ("rvm/exporters/onnx.py", "rvm/runtimes/base.py", "rvm/models/manifest.json",
                   "rvm/runtimes/tfjs_runner/runner.js", "rvm/formats.py"):
        assert needed in names, needed


def defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name for node in tree.body)


@pytest.mark.parametrize("entry", formats.FORMATS.values(), ids=list(formats.FORMATS))
def test_registered_format_is_complete(entry):
    """Its exporter and runtime exist, every precision has a tolerance, and it has a test module of its own
    (the parity rows are generated from the registry)."""
    for which in ("exporter", "runtime"):
        module, attribute = getattr(entry, which).split(":")
        assert module in MODULES, f"{entry.name}: {which} module {module} does not exist"
        assert defines(MODULES[module], attribute), f"{entry.name}: {module} defines no {attribute}"
    assert set(entry.tolerances) == set(entry.precisions)
    for precision, bounds in entry.tolerances.items():
        # no bound as wide as the quantity's range (alpha and foreground are in 0..1)
        assert bounds.pha_mean < 1 and bounds.fgr_mean < 1, (entry.name, precision)
        # the foreground's worst pixels are bounded, as a maximum or (quantized) as the 99.9th percentile
        assert min(b for b in (bounds.fgr_max, bounds.fgr_p999) if b is not None) < 1, (entry.name, precision)
    assert (ROOT / "tests" / f"test_format_{entry.name}.py").is_file(), f"{entry.name} has no test module"
    assert entry.static in ("never", "optional", "always")
    assert entry.extra is None or entry.extra in pyproject_extras(), f"{entry.name}: no extra [{entry.extra}]"
    assert entry.artifact_description.strip(), f"{entry.name}: say what a valid artifact is (the ArtifactError)"


def pyproject_extras():
    import tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_completeness_check_catches_a_format_without_a_runtime():
    broken = formats.Format(name="nonesuch", title="Nonesuch", precisions=("fp32",), exporter="rvm.exporters.onnx:nope",
                            runtime="rvm.runtimes.nonesuch:NoRuntime", tolerances={"fp32": fp32_tolerance("")},
                            artifact_name=lambda *a: "x", recognizes=lambda p: False,
                            artifact_description="a nonesuch file")
    with pytest.raises(AssertionError):
        test_registered_format_is_complete(broken)


def test_clip_for_validation_comes_from_the_tests_not_the_library():
    assert Path(os.environ["RVM_VALIDATION_CLIP"]).resolve() == need(CLIPS / "person_a.mp4").resolve()
    library = [path for name, path in MODULES.items() if "shared" in path.read_text()]
    assert not [p for p in library if "../shared" in p.read_text() or '"shared"' in p.read_text()], library


# Modules that are about particular formats by nature, each with why; every other rvm module is generic.
FORMAT_SPECIFIC = {
    "rvm/formats.py": "the registry itself",
    "rvm/tolerances.py": "the registry's bounds, one row per format",
    "rvm/web/site.py": "the browser page's two engines (TF.js, onnxruntime-web) are named after their formats in the "
                  "page's models.json, which app.js reads",
}


def format_names_branched_on(path: Path):
    """(line, name) of each string constant equal to a registered format name that generic code branches on or
    looks up by: compared (`==`, `in`), a dict key, a subscript, a `.get`/`.pop`/`.setdefault` key or a `case`
    pattern. Docstrings, help text, messages and call arguments (`export(model, "onnx", ...)`) are not branching."""
    names = set(formats.FORMATS)

    def constants(node):
        if isinstance(node, ast.Constant) and node.value in names:
            yield node
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for element in node.elts:
                yield from constants(element)

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        keys = []
        if isinstance(node, ast.Compare):
            keys = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            keys = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.Subscript):
            keys = [node.slice]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and node.func.attr in ("get", "pop", "setdefault"):
            keys = [node.args[0]]
        elif isinstance(node, ast.MatchValue):
            keys = [node.value]
        found += [(constant.lineno, constant.value) for key in keys for constant in constants(key)]
    return sorted(found)


def test_generic_code_does_not_branch_on_format_names():
    """What differs between formats is declared in the registry (rvm/formats.py, its bounds in rvm/tolerances.py)
    or by the format's runtime (`threads`, `settings_sweeps`), never a comparison with a format's name in a generic
    module."""
    offenders = []
    for path in sorted((ROOT / "rvm").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative not in FORMAT_SPECIFIC:
            offenders += [f"{relative}:{line}: {name!r}" for line, name in format_names_branched_on(path)]
    assert not offenders, "\n".join(offenders)


def test_the_format_name_scan_finds_branching(tmp_path):
    source = tmp_path / "generic.py"
    source.write_text('"""Mentions onnx."""\n'
                      'def f(runtime, paths, table):\n'
                      '    export(runtime, "onnx", "fp32")  # an argument: fine\n'
                      '    if runtime.backend == "onnx":\n'
                      '        return paths.get(("openvino", "fp32"))\n'
                      '    if runtime.backend in ("tflite", "ncnn"):\n'
                      '        return {"tf": 1}, table["coreml"]\n')
    assert format_names_branched_on(source) == [(4, "onnx"), (5, "openvino"), (6, "ncnn"), (6, "tflite"),
                                                (7, "coreml"), (7, "tf")]


@pytest.mark.parametrize("runtime", [entry.runtime for entry in formats.FORMATS.values()] + [REFERENCE.runtime])
def test_every_runtime_takes_threads(runtime):
    """Generic code (batch workers) passes `threads=` to whichever runtime runs the artifact."""
    import inspect
    module, name = runtime.split(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert "threads" in inspect.signature(cls.from_path).parameters, runtime
    for sweep in cls.settings_sweeps():  # what bench measures is declared by the runtime, in its own options
        assert sweep.settings and all(set(options) >= {o for o, _ in sweep.columns} for options in sweep.settings)


MAX_PARAMETERS = 8
# a block's forward takes the network's tensors, as the official model's does: the decoder's are the four encoder
# features, the image and the four recurrent states
TENSOR_SIGNATURES = {("rvm.model.decoder", "forward")}


def test_no_public_function_takes_more_than_eight_parameters():
    """Requests, not parameter lists: what a call needs beyond a few values travels in a request object
    (ConvertRequest, BatchRequest, BenchRequest, TuneRequest, Proof)."""
    crowded = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                arguments = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
                count = len(arguments) - (arguments[:1] in (["self"], ["cls"]))
                if count > MAX_PARAMETERS and (name, node.name) not in TENSOR_SIGNATURES:
                    crowded.append(f"{name}.{node.name} ({count})")
    assert not crowded, crowded
