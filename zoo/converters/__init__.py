"""Converters turn released weights into zoo's converted directory (:mod:`zoo.converters.modeldir`); they only
convert — finding, downloading and caching are :mod:`zoo.weights`' and :mod:`zoo.resolver`'s business.

- :mod:`~zoo.converters.tf`: TensorFlow checkpoints of the three upstream naming schemes (no TensorFlow needed)
- :mod:`~zoo.converters.tf_export`: the other direction — a zoo model as an upstream TF release (``zoo export
  --format tf``)
- :mod:`~zoo.converters.transformers`: transformers-named ALBERT/BERT weights (``hf:`` sources)
- :mod:`~zoo.converters.hf_names`: canonical ↔ transformers names and configs (used by export too)

    import zoo.converters
    zoo.converters.convert("albert_base_zh/", "out/")   # model.safetensors, config.json, vocab.txt, receipt.json

Importing this package does not import torch, and neither does converting a TF checkpoint (numpy views);
transformers weights and transformers-layout exports do.
"""

from zoo.converters.modeldir import CONVERTER_VERSION
from zoo.converters.schemes import detect_scheme, plan
from zoo.converters.tf import convert

__all__ = ["CONVERTER_VERSION", "convert", "detect_scheme", "plan"]
