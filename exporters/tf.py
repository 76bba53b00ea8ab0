"""TF SavedModel export (NHWC), drop-in compatible with the official `rvm_*_tf/` download.

`loaded([src, r1i, r2i, r3i, r4i, downsample_ratio])` returns a dict `fgr, pha, r1o..r4o`; the
`serving_default` signature takes the same tensors by name. States start as `tf.constant(0.)` (any
rank broadcasts), the ratio is a runtime float32 scalar, batch/height/width are dynamic. The network is
re-implemented in TF from the torch weights (`exporters.tf_network`), not converted from ONNX.
"""
import logging
from pathlib import Path

from rvm.contracts import TF_INPUTS, TF_OUTPUTS
from rvm.metadata import METADATA_FILE, ArtifactMetadata

log = logging.getLogger(__name__)


def build_module(model):
    """A `tf.Module` whose `__call__` and `serve` are the two calling conventions of the contract."""
    import tensorflow as tf

    from .tf_network import TFMattingNetwork

    network = TFMattingNetwork(model)
    src_spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    # states: a full NHWC tensor or a scalar zero, so rank is left open; ratio: a scalar (or [1])
    open_specs = [tf.TensorSpec(None, tf.float32) for _ in TF_INPUTS[1:]]

    def run(src, r1, r2, r3, r4, ratio):
        return dict(zip(TF_OUTPUTS, network(src, r1, r2, r3, r4, tf.reshape(ratio, []))))

    class SavedMattingModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        @tf.function(input_signature=[[src_spec, *open_specs]])
        def __call__(self, inputs):
            return run(*inputs)

        @tf.function(input_signature=[tf.TensorSpec(spec.shape, tf.float32, name=name)
                                      for spec, name in zip([src_spec, *open_specs], TF_INPUTS)])
        def serve(self, src, r1i, r2i, r3i, r4i, downsample_ratio):
            return run(src, r1i, r2i, r3i, r4i, downsample_ratio)

    return SavedMattingModel()


def export_tf(model, path, precision: str, options) -> None:
    import tensorflow as tf

    module = build_module(model)
    path = Path(path)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function()})
    metadata = ArtifactMetadata.for_export(model, "tf", precision, {"tensorflow": tf.__version__}, options)
    (path / METADATA_FILE).write_text(metadata.to_json())
    log.info("wrote TF SavedModel to %s", path)
