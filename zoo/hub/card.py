"""The text files of an exported folder: tokenizer files and the ``README.md`` model card.

The card is what a person sees on the Hub (or a self-hosted mirror): YAML front matter the Hub indexes
(license, language, tags, library_name), then where the weights came from, every hash needed to check them,
zoo's conversion receipt, the citation and how to load the folder with zoo and with transformers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from zoo._version import __version__
from zoo.config import ModelConfig

SPECIAL_TOKENS_MAP = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}

#: manifest ``language`` -> Hub ``language`` metadata
_HUB_LANGUAGE = {"zh": "zh", "en": "en", "multi": "multilingual"}


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where an export came from, for the model card. Every field is optional (a bare directory has little)."""

    name: str
    description: str = ""
    family: str = ""
    language: str | None = None
    license: str | None = None
    homepage: str | None = None
    citation: str | None = None
    #: the origin of the weights: a download URL or ``hf:org/repo@revision``
    origin: str | None = None
    #: sha256 of the pulled source (a URL source's download, or the combined hash of an hf source's files)
    source_sha256: str | None = None
    #: the conversion receipt (``receipt.json`` of the converted directory)
    receipt: Mapping[str, Any] | None = None


def tokenizer_files(config: ModelConfig, *, lowercase: bool, strip_accents: bool | None) -> dict[str, str]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` for a WordPiece vocab.

    ``tokenizer_class`` is named explicitly: ``AutoTokenizer`` would otherwise pick the SentencePiece
    ``AlbertTokenizer`` for ``model_type: albert``, which Chinese ALBERT vocabularies are not.
    """
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": strip_accents,
        "tokenize_chinese_chars": True,
        "do_basic_tokenize": True,
        "model_max_length": config.max_position_embeddings,
        "clean_up_tokenization_spaces": True,
        **SPECIAL_TOKENS_MAP,
    }
    return {"tokenizer_config.json": _json(tokenizer_config), "special_tokens_map.json": _json(SPECIAL_TOKENS_MAP)}


def model_card(prov: Provenance, config: ModelConfig, hf_config: Mapping[str, Any],
               files: Mapping[str, str], *, repo_id: str | None = None) -> str:
    """The README.md of an exported folder. ``files`` maps each exported file to its sha256."""
    model_type = hf_config["model_type"]
    front: dict[str, Any] = {}
    license_id = (prov.license or "").strip()
    if license_id and license_id.upper() != "NOASSERTION":
        front["license"] = license_id.lower()
    else:
        front["license"] = "other"
        front["license_name"] = "unknown"
        if prov.homepage:
            front["license_link"] = prov.homepage
    if prov.language:
        front["language"] = [_HUB_LANGUAGE.get(prov.language, prov.language)]
    front["library_name"] = "transformers"
    front["pipeline_tag"] = "fill-mask"
    front["tags"] = sorted({model_type, prov.family or model_type, "fill-mask", "zoo", "safetensors"})

    repo = repo_id or f"zoo/{prov.name}"
    title = prov.description or prov.name
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {prov.name}",
        "",
        title + ("." if title and not title.endswith(".") else ""),
        "",
        (f"transformers `{hf_config['architectures'][0]}` weights ({model_type}, "
         f"{config.num_hidden_layers} layers, hidden size {config.hidden_size}), exported by "
         f"[zoo](https://github.com/zoo-checkpoints/zoo) {__version__} from the original release "
         "(no retraining, no fine-tuning)."),
        "",
        "## Origin",
        "",
    ]
    if prov.homepage:
        lines.append(f"- Project: {prov.homepage}")
    if prov.origin:
        lines.append(f"- Weights downloaded from: `{prov.origin}`")
    if prov.source_sha256:
        lines.append(f"- sha256 of the download: `{prov.source_sha256}`")
    if config.architecture == "albert-brightmart":
        lines.append("- brightmart's ALBERT factorises the token embeddings as `word_embeddings @ word_embeddings_2`; "
                     "this export multiplies them out (`embedding_size` = `hidden_size`, identity "
                     "`embedding_hidden_mapping_in`), which computes exactly the same function.")
    if config.hidden_act == "gelu_new":
        lines.append("- The original TensorFlow code computes GELU with the tanh approximation: "
                     "`hidden_act` is `gelu_new`.")
    lines += ["", "## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{name}` | `{sha}` |" for name, sha in sorted(files.items())]
    receipt = _short_receipt(prov.receipt)
    if receipt:
        inputs: Sequence[Mapping[str, Any]] = receipt.get("inputs") or ()
        if inputs:
            lines += ["", "Files of the original release:", "", "| file | role | bytes | sha256 |", "|---|---|---|---|"]
            lines += [f"| `{i.get('path')}` | {i.get('role', '')} | {i.get('size', '')} | `{i.get('sha256')}` |"
                      for i in inputs]
        lines += ["", "## Conversion receipt", "", "```json", json.dumps(receipt, indent=2, ensure_ascii=False),
                  "```"]
    lines += ["", "## Usage", "", "With transformers:", "", "```python",
              "from transformers import AutoModelForMaskedLM, AutoTokenizer", "",
              f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
              f'model = AutoModelForMaskedLM.from_pretrained("{repo}")', "```", "",
              "With zoo (verifies every file's sha256 before use):", "", "```python", "import zoo", "",
              f'loaded = zoo.load("{prov.name}", heads="mlm")', 'loaded.fill_mask("今天天气很[MASK]。")', "```"]
    if prov.citation:
        lines += ["", "## Citation", "", "```", prov.citation.strip(), "```"]
    return "\n".join(lines) + "\n"


def _short_receipt(receipt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The receipt without the (long) list of skipped variable names."""
    if not receipt:
        return None
    short = dict(receipt)
    skipped = short.get("skipped")
    if isinstance(skipped, Mapping) and "names" in skipped:
        short["skipped"] = {k: v for k, v in skipped.items() if k != "names"}
    return short


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
