"""The text files of an exported folder: tokenizer files and the ``README.md`` model card.

The card is what a person sees on the Hub (or a self-hosted mirror): YAML front matter the Hub indexes
(license, language, tags, library_name; a trained model carries its base model's license), then what the model
is and where its weights came from — a release, a conversion, or the base model and the training data of a trained
one —, every hash needed to check them, the citation and usage that works, with zoo and with transformers. Nothing
in a card names a local path: paths and ``file://`` URLs are reduced to their file names (:func:`public`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

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
    #: the receipt of the weights exported (``receipt.json`` of the folder, else of its conversion)
    receipt: Mapping[str, Any] | None = None
    #: what the model is, without local paths (:func:`made_from`): a release, a conversion, a trained model
    made_from: Mapping[str, Any] | None = None


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
               files: Mapping[str, str], *, repo_id: str | None = None, folder: str | None = None) -> str:
    """The README.md of an exported folder. ``files`` maps each exported file to its sha256; ``folder`` is the
    name of the folder it is written into (what the usage examples load when there is no ``repo_id``)."""
    made = dict(prov.made_from or {"kind": "unknown", "model": prov.name})
    model_type = hf_config["model_type"]
    about = prov.description.strip()
    lines = ["---", yaml.safe_dump(_front_matter(prov, model_type, config.task), sort_keys=False,
                                   allow_unicode=True).rstrip(),
             "---", "", f"# {prov.name}", "", *([about + ("" if about.endswith(".") else "."), ""] if about else []),
             (f"transformers `{hf_config['architectures'][0]}` weights ({model_type}, "
              f"{config.num_hidden_layers} layers, hidden size {config.hidden_size}), exported by "
              f"[zoo](https://github.com/zoo-checkpoints/zoo) {__version__} {_what_it_is(made)}."),
             *_task(config, made), "", "## Origin", "", *_origin(prov, made)]
    if config.architecture == "albert-brightmart":
        lines.append("- brightmart's ALBERT factorises the token embeddings as `word_embeddings @ word_embeddings_2`; "
                     "this export multiplies them out (`embedding_size` = `hidden_size`, identity "
                     "`embedding_hidden_mapping_in`), which computes exactly the same function.")
    if config.hidden_act == "gelu_new":
        lines.append("- The original TensorFlow code computes GELU with the tanh approximation: "
                     "`hidden_act` is `gelu_new`.")
    lines += ["", "## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{name}` | `{sha}` |" for name, sha in sorted(files.items())]
    inputs: Sequence[Mapping[str, Any]] = made.get("inputs") or ()
    if inputs:
        lines += ["", "Files of the original release:", "", "| file | role | bytes | sha256 |", "|---|---|---|---|"]
        lines += [f"| `{i.get('path')}` | {i.get('role', '')} | {i.get('size', '')} | `{i.get('sha256')}` |"
                  for i in inputs]
    lines += ["", "## Provenance", "", "What zoo's receipt records about these weights:", "", "```json",
              json.dumps({k: v for k, v in made.items() if k not in ("inputs", "about", "results")}, indent=2,
                         ensure_ascii=False), "```"]
    lines += _usage(prov, made, repo_id, folder, config)
    if prov.citation:
        lines += ["", "## Citation", "", "```", prov.citation.strip(), "```"]
    return "\n".join(lines) + "\n"


#: The Hub's ``pipeline_tag`` of each model: fill-mask for pretrained ones, the task's pipeline for fine-tuned ones.
PIPELINE_TAGS: dict[str | None, str] = {None: "fill-mask", "token-classification": "token-classification",
                                        "sequence-classification": "text-classification"}


def _front_matter(prov: Provenance, model_type: str, task: str | None = None) -> dict[str, Any]:
    """The YAML the Hub indexes: license (the base model's for a trained one), language, tags."""
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
    front["pipeline_tag"] = PIPELINE_TAGS[task]
    front["tags"] = sorted({model_type, prov.family or model_type, PIPELINE_TAGS[task], "zoo", "safetensors"})
    return front


def _task(config: ModelConfig, made: Mapping[str, Any]) -> list[str]:
    """What a fine-tuned model predicts: its labels in id order (``id2label``), and the results its run
    recorded."""
    if config.task is None or not config.labels:
        return []
    labels = ", ".join(f"`{label}`" for label in config.labels)
    if config.task == "sequence-classification":
        what = (f"A fine-tuned text classifier: one of {len(config.labels)} classes per text (or text pair): "
                f"{labels} (`id2label`, in id order).")
        return ["", "## Task", "", what, *_results(made.get("results"))]
    what = (f"A fine-tuned token classifier (a tagger): one of {len(config.labels)} tags per token, in "
            f"{str(config.tag_scheme).upper()}: {labels} (`id2label`, in id order).")
    types = sorted({t[2:] for t in config.labels if t[:2] in ("B-", "I-", "E-", "S-")})
    if types:
        what += f" Entity types: {', '.join(f'`{t}`' for t in types)}."
    lines = ["", "## Task", "", what]
    if config.tag_scheme == "bioes":
        lines += ["", ("The tags are BIOES: transformers' `aggregation_strategy` understands only `B-`/`I-`, so read "
                       "the tags with `aggregation_strategy=\"none\"` and decode `E-`/`S-` yourself (zoo's `tag()` "
                       "does).")]
    return lines + _results(made.get("results"))


def _results(results: Any, limit: int = 40) -> list[str]:
    """The numbers a fine-tuning run recorded, one row per metric (nested keys joined with ``.``); anything that
    is not a number (a confusion matrix, a note) stays in the receipt."""
    rows: list[tuple[str, float]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                key = str(key).replace("|", "\\|")  # a table cell
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((prefix, value))

    walk("", results if isinstance(results, Mapping) else {})
    if not rows:
        return []
    shown = [f"| {key} | {value:.4g} |" for key, value in rows[:limit]]
    more = ["", f"… and {len(rows) - limit} more in `receipt.json`."] if len(rows) > limit else []
    return ["", "Results recorded by the fine-tuning run:", "", "| metric | value |", "|---|---|", *shown, *more]


def _what_it_is(made: Mapping[str, Any]) -> str:
    kind, model = made.get("kind"), made.get("model")
    if kind == "release":
        return "from the original release (no retraining, no fine-tuning)"
    if kind == "pretraining":
        return f"after continued pretraining of `{model}` ({_training(made)})"
    if kind == "finetune":
        return f"after fine-tuning `{model}` ({_training(made)})"
    if kind == "conversion":
        return f"from the checkpoint `{model}` (converted, not retrained)"
    return f"from `{model}`"


def _training(made: Mapping[str, Any]) -> str:
    objective = f", objective {made['objective']}" if made.get("objective") else ""
    return f"{made.get('steps', '?')} steps{objective}"


def _origin(prov: Provenance, made: Mapping[str, Any]) -> list[str]:
    """The Origin section: the project, where the weights (or the base model's) came from, what trained them."""
    lines = [f"- Project: {prov.homepage}"] if prov.homepage else []
    if made.get("kind") in ("pretraining", "finetune"):
        sha = f" (weights sha256 `{made['weights_sha256']}`)" if made.get("weights_sha256") else ""
        lines.append(f"- Base model: `{made.get('model')}`{sha}")
        if made.get("source"):
            lines.append(f"- Base model weights from: `{made['source']}`")
        lines.append(f"- {'Continued pretraining' if made['kind'] == 'pretraining' else 'Fine-tuning'}: "
                     f"{_training(made)}")
        for item in made.get("data") or ():
            lines.append(f"- Training data: `{item.get('name')}` (sha256 `{item.get('sha256')}`)")
        return lines
    if made.get("kind") == "conversion":
        scheme = f" ({made['scheme']})" if made.get("scheme") else ""
        lines.append(f"- Converted by zoo from the checkpoint `{made.get('source') or made.get('model')}`{scheme}")
    elif made.get("source"):
        lines.append(f"- Weights {'downloaded from' if '://' in str(made['source']) else 'from'}: "
                     f"`{made['source']}`")
    if made.get("source_sha256"):
        lines.append(f"- sha256 of the download: `{made['source_sha256']}`")
    if not lines:
        lines.append(f"- `{made.get('model')}`: zoo has no record of where these weights came from.")
    return lines


#: The text the usage examples of a fine-tuned model run on.
_EXAMPLE = "今天天气很好。"


def _usage(prov: Provenance, made: Mapping[str, Any], repo_id: str | None, folder: str | None,
           config: ModelConfig) -> list[str]:
    """Usage that works: the Hub repo when there is one, else the exported folder; zoo loads a registry release
    by its name. A fine-tuned model is used through its pipeline (transformers) and ``tag``/``classify`` (zoo)."""
    where = repo_id or f"./{folder or prov.name}"
    task = config.task
    heads = ', heads="mlm"' if task is None else ""  # a fine-tuned model loads with its task head
    if made.get("kind") == "release":
        zoo_lines = [f'loaded = zoo.load("{made.get("model")}"{heads})']
    elif repo_id:
        zoo_lines = ["from huggingface_hub import snapshot_download", "",
                     f'loaded = zoo.load(snapshot_download("{repo_id}"){heads})']
    else:
        zoo_lines = [f'loaded = zoo.load("{where}"{heads})']
    if task == "token-classification":
        strategy = "none" if config.tag_scheme == "bioes" else "simple"  # transformers aggregates B-/I- only
        hf_lines = ["from transformers import pipeline", "",
                    f'tagger = pipeline("token-classification", model="{where}", aggregation_strategy="{strategy}")',
                    f'tagger("{_EXAMPLE}")']
        zoo_lines.append(f'loaded.tag("{_EXAMPLE}")')
    elif task == "sequence-classification":
        hf_lines = ["from transformers import pipeline", "",
                    f'classifier = pipeline("text-classification", model="{where}")', f'classifier("{_EXAMPLE}")']
        zoo_lines.append(f'loaded.classify("{_EXAMPLE}")')
    else:
        hf_lines = ["from transformers import AutoModelForMaskedLM, AutoTokenizer", "",
                    f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
                    f'model = AutoModelForMaskedLM.from_pretrained("{where}")']
        zoo_lines.append('loaded.fill_mask("今天天气很[MASK]。")')
    return ["", "## Usage", "", "With transformers:", "", "```python", *hf_lines, "```", "",
            "With zoo (checks every file against its sha256 before use):", "", "```python", "import zoo", "",
            *zoo_lines, "```"]


def public(value: Any) -> Any:
    """A local path or ``file://`` URL reduced to its file name (cards and exports name no local paths); any other
    value as it is."""
    if isinstance(value, str) and (value.startswith("file:") or os.path.isabs(value)):
        return PurePosixPath(urlsplit(value).path if value.startswith("file:") else value).name
    return value


def made_from(receipt: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """What the model in a folder is, from its receipt, without local paths: what its card says, and what the
    receipt of an export of it records (``made_from``), so an export of an export still knows. ``name``: the
    folder's name."""
    receipt = receipt or {}
    kind = receipt.get("kind")
    if kind == "export":
        return dict(receipt.get("made_from") or {"kind": "unknown", "model": name})
    if kind in ("pretraining", "finetune"):
        base, data = receipt.get("base") or {}, receipt.get("data") or {}
        files = [f for f in data.get("files") or () if isinstance(f, Mapping)]
        return _present({"kind": kind, "model": public(base.get("model")), "source": public(base.get("source")),
                         "weights_sha256": base.get("weights_sha256"), "steps": receipt.get("steps"),
                         "objective": data.get("objective") or (receipt.get("settings") or {}).get("objective"),
                         "data": [{"name": public(f.get("name") or f.get("path")), "sha256": f.get("sha256")}
                                  for f in files]})
    if kind == "conversion":
        inputs = [{**i, "path": public(i.get("path"))} for i in receipt.get("inputs") or () if isinstance(i, Mapping)]
        return _present({"kind": kind, "model": name, "source": public(receipt.get("source")),
                         "source_sha256": receipt.get("source_sha256"), "scheme": receipt.get("scheme"),
                         "inputs": inputs})
    return {"kind": "unknown", "model": name}


def _present(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, [], "")}


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
