"""TensorFlow checkpoints → zoo's canonical safetensors, for the three upstream naming schemes.

    import zoo.converters
    zoo.converters.convert("albert_base_zh/", "out/")          # model.safetensors, config.json, vocab.txt, receipt.json

Importing this package does not import torch; the conversion does.
"""

from zoo.converters.api import CONVERTER_VERSION, convert, ensure_converted
from zoo.converters.schemes import ARCHITECTURES, SCHEMES, detect_scheme, plan

__all__ = ["ARCHITECTURES", "CONVERTER_VERSION", "SCHEMES", "convert", "detect_scheme", "ensure_converted", "plan"]
