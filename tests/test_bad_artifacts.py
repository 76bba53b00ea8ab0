"""A bad artifact is bad input (issue #20): a file or folder that is not a valid artifact of its kind (empty,
garbage or truncated bytes, a folder without its model, another format behind the right suffix) given to
`Runtime.load` or `rvm convert` gives one line naming it and what was expected, exit 2, never "a bug".

The cases are generated from the registry: each format's artifact name comes from its `artifact_name`, and
`LAYOUTS` says, as data, whether that artifact is a file or a folder and which files the folder holds, so a newly
registered format fails `test_every_registered_format_has_a_layout` until it is covered here.
"""
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest

from rvm import formats
from rvm.commands.cli import main
from rvm.errors import ArtifactError, BackendUnavailable, CheckpointError, MissingDependency
from rvm.formats import ExportOptions
from rvm.metadata import METADATA_FILE, ArtifactMetadata
from rvm.runtimes import Runtime

from .conftest import CLIPS, need

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Layout:
    """What an artifact of a format is on disk."""
    model: Optional[str] = None  # the model file inside the artifact folder; None: the artifact is one file
    companions: Tuple[str, ...] = ()  # the folder's other files (weights), written with the same bad bytes

    @property
    def folder(self) -> bool:
        return self.model is not None


LAYOUTS = {
    "torchscript": Layout(),
    "onnx": Layout(),
    "tf": Layout("saved_model.pb", ("variables/variables.index", "variables/variables.data-00000-of-00001")),
    "tfjs": Layout("model.json", ("group1-shard1of1.bin",)),
    "coreml": Layout(),  # the first variant: a .mlmodel file
    "openvino": Layout("model.xml", ("model.bin",)),
    "tflite": Layout(),
    "ncnn": Layout("model.ncnn.param", ("model.ncnn.bin",)),
    "executorch": Layout(),
    "mnn": Layout(),
    "tensorrt": Layout("model.engine"),
}


def _png() -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", np.random.default_rng(2).bytes(2048))
    return buffer.getvalue()


# what the model file (or the one file) holds; None: nothing at all (an empty file, an empty folder)
CORRUPTIONS = {
    "empty": None,
    "garbage": np.random.default_rng(1).bytes(4096),
    "truncated": _zip()[:700],  # a zip archive (what TorchScript is) cut before its central directory
    "png": _png(),  # another format behind the right suffix or name
    "zip": _zip(),
}


def artifact_name(entry: formats.Format) -> str:
    """The name an export of this format would have, with the static options the format needs."""
    static = entry.static == "always"
    options = ExportOptions(resolution=(324, 184) if static else None, downsample_ratio=0.5, static=static)
    return entry.artifact_name("mobilenetv3", entry.precisions[0], entry.variants(options)[0])


def metadata_json(entry: formats.Format) -> str:
    """Valid rvm-toolkit metadata for a folder of this format: only the model is bad."""
    static = entry.static == "always"
    return ArtifactMetadata(format=entry.name, variant="mobilenetv3", refiner="deep_guided_filter",
                            precision=entry.precisions[0], downsample_ratio=0.5 if static else None,
                            resolution=(324, 184) if static else None, static=static).to_json()


def make_bad_artifact(folder: Path, entry: formats.Format, corruption: str) -> Path:
    """The artifact of `entry` under `folder`, bad as `corruption` says ("no model": its folder without it)."""
    path = folder / artifact_name(entry)
    layout = LAYOUTS[entry.name]
    data = CORRUPTIONS.get(corruption)
    if not layout.folder:
        path.write_bytes(data or b"")
        return path
    path.mkdir()
    if corruption == "empty":
        return path
    (path / METADATA_FILE).write_text(metadata_json(entry))
    files = layout.companions if corruption == "no model" else (layout.model, *layout.companions)
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data if data is not None else np.random.default_rng(3).bytes(1024))
    return path


CASES = [pytest.param(name, corruption, id=f"{name}-{corruption}")
         for name, entry in formats.FORMATS.items() for corruption in (*CORRUPTIONS, "no model")
         if corruption != "no model" or LAYOUTS.get(name, Layout()).folder]


def test_every_registered_format_has_a_layout_and_a_description():
    assert set(LAYOUTS) == set(formats.FORMATS), "add the new format's on-disk layout to LAYOUTS"
    for entry in formats.FORMATS.values():
        assert entry.artifact_description and "\n" not in entry.artifact_description, entry.name


def skip_unless_runnable(entry: formats.Format) -> None:
    """Skip where the format's runtime cannot run here at all (its package absent, no GPU for a "gpu" format)."""
    try:
        entry.require(runtime=True)
    except MissingDependency as error:
        pytest.skip(str(error))
    if "gpu" in entry.marks:
        import torch
        if not torch.cuda.is_available():
            pytest.skip(f"{entry.title} runs on a CUDA GPU: none here")


def assert_one_line_naming(error: BaseException, path) -> None:
    message = str(error)
    assert "\n" not in message and str(path) in message, message
    assert len(message) < 600, message


@pytest.mark.parametrize("name, corruption", CASES)
def test_runtime_load_refuses_a_bad_artifact_in_one_line(tmp_path, name, corruption):
    entry = formats.FORMATS[name]
    path = make_bad_artifact(tmp_path, entry, corruption)
    try:
        Runtime.load(str(path))
    except ArtifactError as error:
        assert_one_line_naming(error, path)
    except (MissingDependency, BackendUnavailable) as error:  # the format's runtime cannot run here at all
        pytest.skip(f"{entry.title} runtime unavailable here: {error}")
    else:
        pytest.fail(f"{path} loaded")


def test_the_backends_reason_is_kept_and_chained(tmp_path):
    path = make_bad_artifact(tmp_path, formats.FORMATS["onnx"], "garbage")
    with pytest.raises(ArtifactError) as error:
        Runtime.load(str(path))
    message = str(error.value)
    assert message.startswith(f"{path} is not a valid ONNX Runtime artifact (expected an ONNX model file")
    assert "INVALID_PROTOBUF" in message and error.value.__cause__ is not None  # -v shows the backend's traceback


def test_a_folder_with_our_metadata_but_no_model_names_its_format(tmp_path):
    path = make_bad_artifact(tmp_path, formats.FORMATS["openvino"], "no model")
    with pytest.raises(ArtifactError, match="not a valid OpenVINO artifact .*model.xml.*holds rvm_metadata.json"):
        Runtime.load(str(path))


def test_missing_paths_and_unknown_files(tmp_path):
    with pytest.raises(ArtifactError, match=r"missing\.onnx does not exist: expected an ONNX model file"):
        Runtime.load(str(tmp_path / "missing.onnx"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="cannot tell which backend runs"):
        Runtime.load(str(tmp_path / "notes.txt"))
    with pytest.raises(ArtifactError, match="is a folder but no artifact of a known format"):
        Runtime.load(str(tmp_path))


def test_tfjs_weight_shards_are_checked_at_load(tmp_path):
    """TF.js runs in a Node process: model.json and its shards are checked before it starts, so the error comes
    from the load, not a later frame."""
    folder = tmp_path / "rvm_mobilenetv3_tfjs_mixed"
    folder.mkdir()
    manifest = [{"paths": ["group1-shard1of2.bin", "group1-shard2of2.bin"], "weights": []}]
    (folder / "model.json").write_text(json.dumps({"modelTopology": {}, "weightsManifest": manifest}))
    (folder / "group1-shard1of2.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError, match="lists weight shards that are not beside it: group1-shard2of2.bin"):
        Runtime.load(str(folder))


def test_tfjs_model_node_cannot_load_is_an_artifact_error(tmp_path):
    from rvm.runtimes.tfjs import find_node
    try:
        find_node()
    except BackendUnavailable as error:
        pytest.skip(str(error))
    folder = tmp_path / "rvm_mobilenetv3_tfjs_mixed"
    folder.mkdir()
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": [{"name": "w", "shape": [64], "dtype": "float32"}]}]
    (folder / "model.json").write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": []},
                                                   "weightsManifest": manifest}))
    (folder / "group1-shard1of1.bin").write_bytes(b"\0" * 12)  # 3 floats where 64 are declared
    with pytest.raises(ArtifactError, match="is not a TF.js graph model TF.js can load") as error:
        Runtime.load(str(folder))
    assert_one_line_naming(error.value, folder)


def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path):
    from rvm.checkpoints import load_model
    path = tmp_path / "corrupt.pth"
    path.write_bytes(CORRUPTIONS["truncated"])
    with pytest.raises(CheckpointError) as error:
        load_model(str(path))
    assert_one_line_naming(error.value, path)


# ---- the CLI ---------------------------------------------------------------------------------------------------
def convert_flags(clip, *model):
    return ["convert", *model, "--input-source", str(clip), "--output-alpha", "out.mp4", "--disable-progress"]


@pytest.mark.parametrize("name, corruption", CASES)
def test_convert_refuses_a_bad_artifact_with_exit_2(tmp_path, monkeypatch, capsys, name, corruption):
    """In process, every case: exit 2, one `rvm: error:` line naming the relative path, no output."""
    clip = need(CLIPS / "person_a.mp4")
    entry = formats.FORMATS[name]
    skip_unless_runnable(entry)
    path = make_bad_artifact(tmp_path, entry, corruption)
    monkeypatch.chdir(tmp_path)
    code = main(convert_flags(clip, "--model", path.name))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("rvm: error: ") and "\n" not in err and path.name in err and "a bug" not in err, err
    assert not (tmp_path / "out.mp4").exists()


def run_rvm(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rvm.commands.cli", *args], cwd=cwd, capture_output=True, text=True,
                          errors="replace", timeout=300)


def assert_refused(result: subprocess.CompletedProcess, cwd: Path, name: str) -> None:
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(err) == 1 and err[0].startswith("rvm: error: ") and name in err[0], result.stderr
    assert "a bug" not in err[0]
    assert not (cwd / "out.mp4").exists()


@pytest.mark.parametrize("name", ["onnx", "torchscript", "tfjs", "openvino"])
def test_rvm_convert_subprocess_with_a_relative_corrupt_model(tmp_path, name):
    clip = need(CLIPS / "person_a.mp4")
    path = make_bad_artifact(tmp_path, formats.FORMATS[name], "garbage")
    assert_refused(run_rvm(tmp_path, *convert_flags(clip, "--model", path.name)), tmp_path, path.name)


def test_rvm_convert_subprocess_with_a_corrupt_checkpoint_and_a_missing_model(tmp_path):
    clip = need(CLIPS / "person_a.mp4")
    (tmp_path / "corrupt.pth").write_bytes(CORRUPTIONS["garbage"])
    assert_refused(run_rvm(tmp_path, *convert_flags(clip, "--checkpoint", "corrupt.pth")), tmp_path, "corrupt.pth")
    assert_refused(run_rvm(tmp_path, *convert_flags(clip, "--model", "missing.onnx")), tmp_path, "missing.onnx")
