"""TensorFlow's formats without TensorFlow: V2 checkpoints (read them, and write them byte for byte as TensorFlow
does), and TFRecord files of ``tf.train.Example`` (:mod:`zoo.tf.tfrecord`, :mod:`zoo.tf.example`; not imported
here, as they need numpy).

    import zoo.tf
    ckpt = zoo.tf.read_tf_checkpoint("albert_base_zh/albert_model.ckpt")   # lazy Mapping[str, torch.Tensor]
    ckpt["bert/embeddings/word_embeddings"].shape
    zoo.tf.list_variables("albert_base_zh")                                # names, dtypes, shapes; no torch
    zoo.tf.write_checkpoint("out/model.ckpt", {"w": numpy_array})          # PREFIX.index + PREFIX.data-00000-of-00001
"""

from zoo.tf.bundle import (
                           FileDigest,
                           ShardReader,
                           TensorBundle,
                           Variable,
                           find_prefix,
                           list_variables,
                           read_tf_checkpoint,
)
from zoo.tf.writer import BundleWriter, write_checkpoint

__all__ = ["BundleWriter", "FileDigest", "ShardReader", "TensorBundle", "Variable", "find_prefix", "list_variables",
           "read_tf_checkpoint", "write_checkpoint"]
