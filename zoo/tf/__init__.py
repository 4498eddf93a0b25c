"""Read TensorFlow V2 checkpoints without TensorFlow.

    import zoo.tf
    ckpt = zoo.tf.read_tf_checkpoint("albert_base_zh/albert_model.ckpt")   # lazy Mapping[str, torch.Tensor]
    ckpt["bert/embeddings/word_embeddings"].shape
    zoo.tf.list_variables("albert_base_zh")                                # names, dtypes, shapes; no torch
"""

from zoo.tf.bundle import TensorBundle, Variable, list_variables, read_tf_checkpoint, find_prefix

__all__ = ["TensorBundle", "Variable", "list_variables", "read_tf_checkpoint", "find_prefix"]
