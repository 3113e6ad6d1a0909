"""`gpu-image-worker process`: the pipeline on files, without Redis; and the
operator's output defaults (--config, --output)."""

from __future__ import annotations

import json
import subprocess

import corpus
import pytest
from conftest import DATA, PHOTOS, WORKER_CMD, make_photo
from PIL import Image

from fastimg.cli import process as process_command
from fastimg.cli.options import output_spec
from fastimg.cli.worker import build_parser
from fastimg.image import pipeline
from fastimg.image.spec import SPEC_V1, SpecError


def run_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(WORKER_CMD + ["process", *args], capture_output=True, text=True, timeout=300)


def test_process_makes_outputs_for_every_photo(tmp_path):
    photos = [str(DATA / p) for p in PHOTOS]
    out = tmp_path / "out"
    res = run_process(*photos, "-o", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(photos)} files" in res.stdout and f"{len(photos)} ok, 0 failed" in res.stdout
    assert f"{3 * len(photos)} outputs" in res.stdout
    for p in PHOTOS:
        stem = p.rsplit(".", 1)[0]
        for op in ("thumbnail", "blur", "low-quality"):
            with Image.open(out / f"{stem}_{op}.webp") as im:
                assert im.format == "WEBP"


def test_process_reports_failures_and_exits_non_zero(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    good = make_photo(tmp_path / "good.jpg")
    res = run_process(
        str(good), str(bad), str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"), "--ops", "thumbnail"
    )
    assert res.returncode == 1
    assert "1 ok, 2 failed" in res.stdout
    assert "notes.jpg: unsupported-format" in res.stdout and "missing.png: input-missing" in res.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good_thumbnail.webp"]


def test_process_usage_errors(tmp_path):
    assert run_process(str(tmp_path / "x.jpg"), "--ops", "zoom").returncode == 2
    assert run_process(str(tmp_path / "x.jpg"), "--output", "thumbnail.quality=500").returncode == 2
    assert "--ops" in run_process("--help").stdout


def test_operator_defaults_from_config_and_flags(tmp_path):
    config = tmp_path / "outputs.json"
    config.write_text(json.dumps({"outputs": {"thumbnail": {"width": 150, "height": 150}, "blur": {"sigma": 4}}}))
    args = build_parser().parse_args(
        ["--config", str(config), "--output", "thumbnail.quality=60", "--output", "low-quality.dither=true"]
    )
    spec = output_spec(args)
    assert (spec["thumbnail"].width, spec["thumbnail"].quality) == (150, 60)
    assert spec["blur"].sigma == 4 and spec["blur"].sigma_fraction == 0
    assert spec["low-quality"].dither and spec["low-quality"].levels == SPEC_V1["low-quality"].levels
    with pytest.raises(SpecError, match=r"outputs\.blur: unknown field .levels"):
        config.write_text(json.dumps({"outputs": {"blur": {"levels": 3}}}))
        output_spec(build_parser().parse_args(["--config", str(config)]))
    with pytest.raises(SpecError, match=r"--output\.thumbnail\.width"):
        output_spec(build_parser().parse_args(["--output", "thumbnail.width=0"]))


def test_process_applies_output_flags(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(900, 600))
    res = run_process(
        str(photo),
        "-o",
        str(tmp_path / "o"),
        "--ops",
        "thumbnail",
        "--output",
        "thumbnail.width=90",
        "--output",
        "thumbnail.height=90",
    )
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "o" / "p_thumbnail.webp") as im:
        assert im.size == (90, 60)


def test_a_bug_fails_one_file_and_the_batch_goes_on(tmp_path, monkeypatch, capsys):
    good = tmp_path / "good.png"
    good.write_bytes(corpus.save(Image.fromarray(corpus.pattern()), "PNG"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes())
    real = pipeline.process

    def process(job, *args, **kwargs):
        if job.input_path.endswith("bad.png"):
            raise KeyError(60416)
        return real(job, *args, **kwargs)

    monkeypatch.setattr(pipeline, "process", process)
    argv = [str(bad), str(good), "-o", str(tmp_path / "out"), "--ops", "thumbnail", "-j", "1"]
    assert process_command.main(argv) == 1
    out = capsys.readouterr().out
    assert "1 ok, 1 failed" in out and "bad.png: internal-error: KeyError: 60416" in out
