"""`zoo list`, `zoo info`, global options and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.cli import run

from zoo import __version__
from zoo.registry import builtin_manifest_dir, list_models

ROOT = Path(__file__).resolve().parents[1]


def test_list_json_has_every_model_with_its_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["name"] for r in rows] == list_models()
    base = next(r for r in rows if r["name"] == "albert_base_zh")
    assert base["family"] == "albert" and base["language"] == "zh" and base["params"] == 10_547_968
    assert base["cached"] is False and base["architecture"] == "albert"


def test_list_filters(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "list", "--family", "bert", "--lang", "zh", "--json")
    names = [r["name"] for r in json.loads(out)]
    assert names[0] == "bert_base_zh" and "roberta_wwm_ext_zh" in names and "roberta_tiny_zh_uer" in names
    _, out, _ = run(capsys, "list", "--lang", "multi", "--json")
    assert {r["name"] for r in json.loads(out)} == {"bert_base_multilingual_cased", "bert_base_multilingual_uncased"}


def test_list_piped_prints_plain_aligned_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--family", "albert")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["NAME", "FAMILY", "LANG", "PARAMS", "SIZE", "CACHED"]
    assert "\x1b[" not in out  # no colour codes when piped
    row = next(line for line in lines if line.startswith("albert_large_zh_brightmart "))
    assert row.split()[1:5] == ["albert", "(brightmart)", "zh", "17.0M"]
    assert len(lines) == 1 + len(list_models(family="albert"))


def test_list_shows_the_size_when_known_and_a_dash_otherwise(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Never "?": the size a pin gives (the manifest's, or one recorded on first use), the cached download's, or
    "—" (issue 16)."""
    from zoo import cache
    from zoo.registry import get_manifest

    rows = json.loads(run(capsys, "list", "--json")[1])
    sizes = {r["name"]: r["size"] for r in rows}
    assert sizes["roberta_wwm_ext_large_zh"] == 1_306_484_351 + 109_540  # its hf files are pinned with sizes
    assert sizes["albert_base_zh"] is None  # nothing published, nothing downloaded
    # a size recorded by an earlier download (a trust-on-first-use pin outlives `zoo cache rm`)
    cache.record_pin(get_manifest("albert_base_zh").sources[0].label, "a" * 64, 3 * 1024 ** 2)
    code, out, _ = run(capsys, "list", "--family", "albert")
    cells = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 0 and "?" not in out
    assert cells["albert_base_zh"].split()[4:6] == ["3.0", "MiB"]
    assert cells["albert_large_zh"].split()[4] == "—"
    monkeypatch.setattr("zoo.cli.registry.stdout_is_tty", lambda: True)
    code, out, _ = run(capsys, "list", "--lang", "zh")
    assert code == 0 and "?" not in out and "1.2 GiB" in out and "—" in out


def test_list_on_a_terminal_prints_a_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zoo.cli.registry.stdout_is_tty", lambda: True)
    code, out, _ = run(capsys, "list", "--lang", "zh")
    assert code == 0
    assert "name" in out.splitlines()[0] and "params" in out.splitlines()[0]
    assert "albert_xxlarge_zh" in out and "221.5M" in out


def test_info_shows_config_sources_and_pins(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "bert-base-zh")
    assert code == 0
    assert "bert_base_zh" in out and "Apache-2.0" in out
    assert "https://storage.googleapis.com/bert_models/2018_11_03/chinese_L-12_H-768_A-12.zip" in out
    assert "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c" in out
    assert "not published (trust on first use)" in out
    code, out, _ = run(capsys, "info", "albert_base_zh", "--json")
    data = json.loads(out)
    assert data["config"]["hidden_act"] == "relu" and data["config"]["architecture"] == "albert"
    assert data["sources"][0]["scheme"] == "google-albert" and data["sources"][1]["hf"] == "voidful/albert_chinese_base"


def test_unknown_model_exits_3_with_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info", "albert_bsae_zh")
    assert code == 3 and out == ""
    assert "unknown model 'albert_bsae_zh'" in err and "did you mean albert_base_zh" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "list", "--family", "gpt")[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    code, _, err = run(capsys)
    assert code == 2 and "usage: zoo" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"zoo {__version__}"
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "examples:" in out and "exit codes:" in out


def test_help_and_package_metadata_say_what_zoo_is(capsys: pytest.CaptureFixture[str]) -> None:
    """`zoo --help` and the package description say the same: zoo trains too (issue 16)."""
    code, out, _ = run(capsys, "--help")
    description = out.split("\n\n")[1].replace("\n", " ")
    assert code == 0 and "trainer" in description and "pretrain" in out
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is Python 3.11+
    [metadata] = re.findall(r'^description = "(.*)"$', pyproject, re.MULTILINE)
    assert metadata.rstrip(".") == description.strip().rstrip(".")


def test_a_bad_user_manifest_stops_only_its_own_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((builtin_manifest_dir() / "albert_base_zh.yaml").read_text(encoding="utf-8"))
    data.update(name="broken", aliases=[])
    data["config"]["num_attention_heads"] = 7
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    message = f"{tmp_path / 'broken.yaml'}: config.num_attention_heads: hidden_size 768 is not divisible"
    code, out, err = run(capsys, "list", "--manifests", str(tmp_path))
    assert code == 0 and "albert_large_zh" in out and message in err  # a warning; the rest works
    code, _, err = run(capsys, "info", "albert_large_zh", "--manifests", str(tmp_path))
    assert code == 0
    code, _, err = run(capsys, "info", "broken", "--manifests", str(tmp_path))
    assert code == 4 and message in err


def test_override_is_announced_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((builtin_manifest_dir() / "albert_base_zh.yaml").read_text(encoding="utf-8"))
    data["description"] = "company mirror"
    (tmp_path / "albert_base_zh.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out, err = run(capsys, "--manifests", str(tmp_path), "info", "albert_base_zh", "--json")
    assert code == 0 and json.loads(out)["description"] == "company mirror" and json.loads(out)["builtin"] is False
    assert err.count("albert_base_zh is overridden by user manifest") == 1


def test_list_does_not_import_torch() -> None:
    code = ("import sys, zoo.cli; rc = zoo.cli.main(['list', '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)


def test_commands_without_models_do_not_import_torch(tmp_path: Path) -> None:
    fixture = ROOT / "tests" / "fixtures" / "tf" / "bert"
    code = f"""
import contextlib, io, sys, zoo.cli
for argv in (["info", "bert_base_zh"], ["pull", "no_such_model"], ["cache", "ls"], ["verify"],
             ["ckpt", "ls", {str(fixture)!r}], ["--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = zoo.cli.main(argv)
    assert rc in (0, 3), (argv, rc)
    assert "torch" not in sys.modules, argv
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ZOO_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr


def test_import_zoo_is_lazy() -> None:
    code = "import sys, zoo; assert 'torch' not in sys.modules and 'yaml' not in sys.modules; print(zoo.load)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "function load" in proc.stdout


def test_readme_model_table_is_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_readme_table_records_every_mlm_head_with_its_source() -> None:
    """Issue 16: "not recorded" nowhere; each MLM cell points to a note below the table that names its source."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("<!-- models:begin"):readme.index("<!-- models:end -->")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows and "not recorded" not in table
    notes = dict(re.findall(r"^- \[(\d+)\] (.+)$", table, re.MULTILINE))
    for row in rows:
        mlm = row.split(" | ")[-2]
        [marker] = re.findall(r"\[(\d+)\]", mlm)
        assert marker in notes, row
    assert re.search(r"google-research/bert#102", " ".join(notes.values()))


def test_public_functions_survive_importing_their_modules() -> None:
    code = ("import zoo, zoo.loader, zoo.converters, zoo.hub, zoo.resolver, zoo.tf; "
            "assert callable(zoo.load) and callable(zoo.convert) and callable(zoo.export) and callable(zoo.pull); "
            "assert zoo.load.__module__ == 'zoo.loader' and zoo.convert.__module__ == 'zoo.converters.tf'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("command", "doc"), [("pretrain", "pretraining.md"), ("finetune", "finetuning.md")])
def test_every_training_option_is_documented(command: str, doc: str) -> None:
    """The settings are defined once (zoo.training.settings) and the flags generated from them: each must appear
    in its command's documentation."""
    import dataclasses

    from zoo.training.settings import FinetuneSettings, PretrainSettings, flag

    cls = PretrainSettings if command == "pretrain" else FinetuneSettings
    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text(encoding="utf-8")
    missing = [flag(f.name) for f in dataclasses.fields(cls) if f"`{flag(f.name)}" not in text]
    assert not missing, f"{doc} does not document {missing}"
