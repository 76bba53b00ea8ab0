"""Artifact metadata is written and read back with its types, whatever the container."""
import json

from rvm.formats import ExportOptions
from rvm.metadata import SCHEMA_VERSION, ArtifactMetadata
from rvm.model import MattingNetwork


def test_round_trip_through_strings_and_json_keeps_types():
    model = MattingNetwork("mobilenetv3", "deep_guided_filter")
    model.checkpoint_info = {"name": "rvm_mobilenetv3", "sha256": "ab" * 32}
    options = ExportOptions(static=True, resolution=(1920, 1080), downsample_ratio=0.25)
    written = ArtifactMetadata.for_export(model, "onnx", "fp16", {"onnx": "1.22.0"}, options, opset=12, simplified=True)
    strings = written.to_strings()
    assert all(isinstance(value, str) for value in strings.values())  # what ONNX and CoreML containers hold
    for read in (ArtifactMetadata.from_strings(strings), ArtifactMetadata.from_json(written.to_json())):
        assert read == written
        assert read.resolution == (1920, 1080) and read.downsample_ratio == 0.25 and read.static is True
        assert read.details == {"opset": 12, "simplified": True} and read.schema_version == SCHEMA_VERSION
        assert read.versions["onnx"] == "1.22.0" and read.versions["rvm_toolkit"]


def test_dynamic_artifacts_carry_no_baked_ratio():
    model = MattingNetwork("resnet50", "fast_guided_filter")
    written = ArtifactMetadata.for_export(model, "tf", "fp32", {}, ExportOptions(downsample_ratio=0.5))
    read = ArtifactMetadata.from_json(written.to_json())
    assert read.static is False and read.downsample_ratio is None and read.resolution is None
    assert (read.variant, read.refiner) == ("resnet50", "fast_guided_filter")


def test_files_of_other_producers_and_older_artifacts():
    assert ArtifactMetadata.from_strings({}) is None  # the official downloads carry none
    assert ArtifactMetadata.from_strings({"author": "someone"}) is None
    older = {"producer": "rvm-toolkit", "format": "coreml", "variant": "mobilenetv3", "refiner": "deep_guided_filter",
             "precision": "int8", "downsample_ratio": "0.25", "resolution": "1920x1080", "torch_version": "2.13.0",
             "rvm_toolkit_version": "0.1.0", "coreml_kind": "mlmodel"}  # written before the schema existed
    read = ArtifactMetadata.from_strings(older)
    assert read.schema_version == 0 and read.static is True and read.resolution == (1920, 1080)
    assert read.versions == {"torch": "2.13.0", "rvm_toolkit": "0.1.0"} and read.details == {"coreml_kind": "mlmodel"}
    assert json.loads(read.to_json())["precision"] == "int8"
