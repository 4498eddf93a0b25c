"""The Hub: export transformers-ready folders and mirror them to the Hugging Face Hub or a self-hosted mirror.

    import zoo
    zoo.export("albert_base_zh", "out/")                          # config.json, model.safetensors, tokenizer, card
    zoo.mirror(["albert_base_zh"], "hf://my-org/albert_base_zh")  # one commit on the Hub
    zoo.mirror(["albert_base_zh"], "/srv/hf-mirror")              # git repo at /srv/hf-mirror/models/zoo/albert_base_zh

Pulling ``hf:`` sources lives in :mod:`zoo.fetch.hf` and :mod:`zoo.resolver`. Importing this package imports
neither torch nor huggingface_hub.
"""

from zoo.hub.exporting import Exported, export
from zoo.hub.mirroring import FileAction, Mirrored, mirror

__all__ = ["Exported", "FileAction", "Mirrored", "export", "mirror"]
