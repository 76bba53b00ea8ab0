"""NCNN: static export via pnnx from the reference model with the state as graph inputs and outputs under the
contract names, fp32/fp16 against PyTorch within the registered bounds (which reject the state zeroed every frame),
the metadata and I/O spec, and the refusals. The 58-frame rows are the parity suite's (parity_tests/)."""
import json

import pytest

pytest.importorskip("pnnx", reason="pnnx is not installed: pip install 'rvm-toolkit[ncnn]'")
pytest.importorskip("ncnn", reason="ncnn is not installed: pip install 'rvm-toolkit[ncnn]'")

from rvm import formats  # noqa: E402
from rvm.errors import UsageError  # noqa: E402
from rvm.exporters import export  # noqa: E402
from rvm.formats import NCNN_PARAM_FILE, ExportOptions  # noqa: E402
from rvm.iospec import spec_path, state_shapes  # noqa: E402
from rvm.runtimes import load  # noqa: E402

from .artifact_helpers import (  # noqa: E402
    STATIC,
    STATIC_RATIO,
    STATIC_SIZE,
    assert_refuses_other_sizes,
    assert_state_round_trips,
    compare_and_reject_a_lost_state,
    export_each_precision,
)

PRECISIONS = formats.get("ncnn").precisions


@pytest.fixture(scope="module")
def artifacts(model, store):
    return export_each_precision(model, "ncnn", store)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_within_tolerance_and_the_bounds_reject_a_lost_state(model, artifacts, stateless_clip, precision):
    with load(artifacts[precision], device="cpu") as runtime:
        result = compare_and_reject_a_lost_state(model, runtime, stateless_clip, "ncnn", precision)
    if precision == "fp32":
        assert result.pha_max <= 1e-4 and result.fgr_max <= 1e-4


def test_contract_names_state_in_the_graph_metadata_and_spec(artifacts):
    path = artifacts["fp32"]
    assert path.name == "rvm_mobilenetv3_ncnn_fp32_324x184_s0.5" and formats.detect(path).name == "ncnn"
    assert formats.detect(path / NCNN_PARAM_FILE).name == "ncnn"
    layers = (path / NCNN_PARAM_FILE).read_text().splitlines()
    assert [line.split()[1] for line in layers if line.startswith("Input")] == ["src", "r1i", "r2i", "r3i", "r4i"]
    text = " ".join(layers)
    assert all(f" {name}" in text for name in ("fgr", "pha", "r1o", "r2o", "r3o", "r4o"))
    assert "expand_as" not in text  # a layer ncnn does not have
    spec = json.loads(spec_path(path).read_text())
    assert spec["format"] == "ncnn" and spec["inputs"][0]["shape"] == [1, 3, STATIC_SIZE[1], STATIC_SIZE[0]]
    assert [i["shape"] for i in spec["inputs"][1:]] == [list(s) for s in
                                                         state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO)]
    with load(path / NCNN_PARAM_FILE, device="cpu") as runtime:  # the param file names its folder
        metadata = runtime.info.metadata
        assert metadata.precision == "fp32" and metadata.resolution == STATIC_SIZE and "pnnx" in metadata.versions


def test_state_round_trips_and_other_sizes_refused(artifacts, stateless_clip):
    with load(artifacts["fp32"], device="cpu") as runtime:
        assert_state_round_trips(runtime, stateless_clip[:2],
                                 shapes=state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO))
        assert_refuses_other_sizes(runtime)


@pytest.mark.parametrize("precision,options,message", [
    ("fp32", ExportOptions(resolution=STATIC_SIZE), "--downsample-ratio"),  # no ratio: a dynamic request
    ("int8", ExportOptions(**STATIC), "supports fp32, fp16"),
])
def test_refused_before_any_work(model, tmp_path, precision, options, message):
    with pytest.raises(UsageError, match=message) as error:
        export(model, "ncnn", precision, tmp_path / "out", options=options)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
