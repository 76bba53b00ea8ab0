"""ExecuTorch: static export lowered with the XNNPACK partitioner, every op delegated (the delegation report in the
metadata), fp32 and PT2E int8 against PyTorch within the registered bounds (which reject the state zeroed every
frame), the metadata method and I/O spec, the state carried and restored, and the refusals. The 58-frame rows are
the parity suite's (parity_tests/)."""
import json

import pytest

pytest.importorskip("executorch", reason="executorch is not installed: pip install 'rvm-toolkit[executorch]'")

from rvm import formats  # noqa: E402
from rvm.errors import UsageError  # noqa: E402
from rvm.exporters import export  # noqa: E402
from rvm.exporters.executorch import delegation_report, describe  # noqa: E402
from rvm.formats import ExportOptions  # noqa: E402
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

PRECISIONS = formats.get("executorch").precisions


@pytest.fixture(scope="module")
def artifacts(model, store):
    return export_each_precision(model, "executorch", store)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_within_tolerance_and_the_bounds_reject_a_lost_state(model, artifacts, stateless_clip, precision):
    with load(artifacts[precision], device="cpu") as runtime:
        result = compare_and_reject_a_lost_state(model, runtime, stateless_clip, "executorch", precision)
    if precision == "fp32":
        assert result.pha_max <= 1e-4 and result.fgr_max <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_xnnpack_takes_every_op(artifacts, precision):
    """The delegation report, stored in the metadata: one XNNPACK partition, nothing left to portable kernels."""
    with load(artifacts[precision], device="cpu") as runtime:
        report = runtime.info.metadata.details["xnnpack"]
    assert report["undelegated_ops"] == {} and report["partitions"] == 1, describe(report)
    assert report["delegated_ops"]["aten.convolution"] >= 80  # the network itself, not an empty partition
    if precision == "int8":  # the int8 blocks run quantized inside the delegate
        assert report["delegated_ops"].get("quantized_decomposed.quantize_per_tensor", 0) > 0, report


def test_delegation_report_lists_what_xnnpack_leaves():
    """Without the rewrites, what XNNPACK lacks (the decoder's ceil-mode pooling) is listed by name."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x.relu(), 2, 2, count_include_pad=False, ceil_mode=True)
    program = torch.export.export(Pool(), (torch.rand(1, 2, 5, 5),))
    report = delegation_report(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
                               .exported_program().graph_module)
    assert report["undelegated_ops"] == {"aten.avg_pool2d": 1} and report["delegated_ops"] == {"aten.relu": 1}
    assert describe(report).endswith("not delegated: aten.avg_pool2d x1")


def test_contract_metadata_and_spec(artifacts):
    path = artifacts["fp32"]
    assert path.name == "rvm_mobilenetv3_fp32_324x184_s0.5.pte" and formats.detect(path).name == "executorch"
    spec = json.loads(spec_path(path).read_text())
    assert spec["format"] == "executorch" and spec["inputs"][0]["shape"] == [1, 3, STATIC_SIZE[1], STATIC_SIZE[0]]
    assert [i["shape"] for i in spec["inputs"][1:]] == [list(s) for s in
                                                         state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO)]
    with load(path, device="cpu") as runtime:
        metadata = runtime.info.metadata
        assert metadata.precision == "fp32" and metadata.resolution == STATIC_SIZE and "executorch" in metadata.versions
        assert metadata.downsample_ratio == STATIC_RATIO and runtime.info.fixed_resolution == STATIC_SIZE


def test_state_round_trips_and_other_sizes_refused(artifacts, stateless_clip):
    with load(artifacts["fp32"], device="cpu") as runtime:
        assert_state_round_trips(runtime, stateless_clip[:3],
                                 shapes=state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO))
        assert_refuses_other_sizes(runtime)


@pytest.mark.parametrize("precision,options,message", [
    ("fp32", ExportOptions(resolution=STATIC_SIZE), "--downsample-ratio"),  # no ratio: a dynamic request
    ("fp16", ExportOptions(**STATIC), "supports fp32, int8"),
    ("int8", ExportOptions(**STATIC), "--calibration"),
])
def test_refused_before_any_work(model, tmp_path, precision, options, message):
    with pytest.raises(UsageError, match=message) as error:
        export(model, "executorch", precision, tmp_path / "out", options=options)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
