"""Config keys and values are checked before any work: types from the dataclasses, ranges, choices."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import config_check
from pipelines.config import PRESETS, CurateConfig, apply, default, load_config, to_dict, to_yaml


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("caption.backend=vlm", "caption.backend must be one of signals, openai, vllm; got 'vlm'"),
        ("split.detector=transnet", "transnetv2, transnetv2-full, adaptive, content"),
        ("runtime.runner=dask", "runtime.runner must be one of ray, sequential"),
        ("clips.min_s=-5", "clips.min_s must be > 0; got -5.0"),
        ("split.threshold=1.5", "split.threshold must be >= 0 and <= 1; got 1.5"),
        ("filters.max_frozen=-0.1", "filters.max_frozen must be >= 0 and <= 1"),
        ("caption.concurrency=0", "caption.concurrency must be >= 1; got 0"),
        ("runtime.num_cpus=two", "runtime.num_cpus must be an integer; got 'two'"),
        ("runtime.num_cpus=1.5", "runtime.num_cpus must be an integer; got 1.5"),
        ("extract.stream_copy=maybe", "extract.stream_copy must be true or false; got 'maybe'"),
        ("split.device=gpu", "split.device must be a device: cpu, cuda, cuda:N or mps"),
        ("clips.min_s=20", "clips.min_s (20.0) must not exceed clips.max_s (10.0)"),
        ("clips.max_seconds=3", "unknown config key 'clips.max_seconds' (did you mean 'max_s'?)"),
        ("clip.min_s=3", "unknown config key 'clip' (did you mean 'clips'?)"),
        ("clips=3", "config section 'clips' needs a mapping"),
    ],
)
def test_bad_override_is_refused_with_what_is_allowed(override: str, message: str) -> None:
    with pytest.raises(config_check.ConfigError) as e:
        load_config("default", None, [override])
    assert message in str(e.value)


def test_override_strings_become_the_field_types() -> None:
    cfg = load_config("tiny", None, [
        "runtime.num_cpus=1", "caption.reject_failed_checks=lang,numbers", "scores.artifacts.periods=[2, 4]",
        "caption.base_url=null", "filters.min_blur=2e-3", "extract.crf=20", "caption.model=7",
        "scores.text.enabled=false", "runtime.num_cpus=~",
    ])
    assert cfg.runtime.num_cpus is None  # the last override wins; '~' is None for an optional field
    assert load_config("tiny", None, ["runtime.num_cpus=1"]).runtime.num_cpus == 1
    assert type(load_config("tiny", None, ["runtime.num_cpus=1"]).runtime.num_cpus) is int
    assert cfg.caption.reject_failed_checks == ("lang", "numbers")
    assert cfg.scores.artifacts.periods == (2, 4)
    assert cfg.caption.base_url is None
    assert cfg.filters.min_blur == 0.002 and type(cfg.filters.min_blur) is float
    assert cfg.extract.crf == 20 and cfg.caption.model == "7"  # a str field keeps the text
    assert cfg.scores.text.enabled is False


def test_relations_are_checked_after_every_layer(tmp_path: Path) -> None:
    # min_s=12 alone exceeds the preset's max_s; with max_s=20 in the same command it is fine
    cfg = load_config("default", None, ["clips.min_s=12", "clips.max_s=20"])
    assert (cfg.clips.min_s, cfg.clips.max_s) == (12.0, 20.0)
    f = tmp_path / "c.yaml"
    f.write_text("clips: {max_s: 30}\n")
    assert load_config("default", f, ["clips.min_s=25"]).clips.min_s == 25.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("caption: {backend: vlm}\n", "caption.backend must be one of signals, openai, vllm"),
        ("clips: {min_s: -5}\n", "clips.min_s must be > 0"),
        ("runtime: {num_cpus: '4'}\n", None),  # a quoted number is read as the int
        ("runtime: {num_cpus: [4]}\n", "runtime.num_cpus must be an integer"),
        ("split: {threshold: high}\n", "split.threshold must be a number; got 'high'"),
        ("caption: {model: 7}\n", "caption.model must be a string; got 7 (int)"),
        ("shards: 3\n", "config section 'shards' needs a mapping"),
        ("filters: {min_luma: 50, max_luma: 40}\n", "filters.min_luma (50.0) must not exceed"),
        ("- a\n- b\n", "needs a mapping"),
    ],
)
def test_yaml_files_are_checked_like_overrides(tmp_path: Path, text: str, message: str | None) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    if message is None:
        assert load_config("default", f).runtime.num_cpus == 4
        return
    with pytest.raises(config_check.ConfigError) as e:
        load_config("default", f)
    assert message in str(e.value)


def test_every_preset_and_its_saved_yaml_pass_the_checks(tmp_path: Path) -> None:
    for name, make in PRESETS.items():
        saved = tmp_path / f"{name}.yaml"
        saved.write_text(to_yaml(make()))  # what every run writes beside its outputs
        assert to_dict(load_config("default", saved)) == to_dict(make()), name


def test_a_prefect_parameter_dict_is_checked_too() -> None:
    """flows/curate_flow.py rebuilds the config with apply(): a bad deployment parameter fails."""
    with pytest.raises(config_check.ConfigError, match="caption.backend must be one of"):
        apply(default(), {"caption": {"backend": "vlm"}})
    with pytest.raises(config_check.ConfigError, match="must not exceed"):
        apply(default(), {"clips": {"min_s": 30.0}})


def test_every_field_of_every_section_has_a_checked_type() -> None:
    """New fields are covered by their annotation: each one's type is one coerce() knows."""
    known = (bool, int, float, str)

    def walk(cls: type, prefix: str) -> list[str]:
        unchecked = []
        for name, hint in config_check.field_types(cls).items():
            if dataclasses.is_dataclass(hint):
                unchecked += walk(hint, f"{prefix}{name}.")
                continue
            args = [a for a in getattr(hint, "__args__", ()) if a is not type(None) and a is not Ellipsis]
            leaves = args or [hint]
            if not all(a in known or getattr(a, "__origin__", None) in (tuple, dict) for a in leaves):
                unchecked.append(f"{prefix}{name}: {hint}")
        return unchecked

    assert walk(CurateConfig, "") == []


def test_choices_match_the_code_that_reads_them() -> None:
    from pipelines.stages.caption import BACKENDS
    from pipelines.stages.shot_split import DETECTORS

    assert config_check.CHOICES["caption.backend"] == BACKENDS
    assert config_check.CHOICES["split.detector"] == DETECTORS
    # a range names a field, or an item of a mapping field whose keys are known (DICT_KEYS)
    items = {f"{field}.{key}" for field, keys in config_check.DICT_KEYS.items() for key in keys}
    assert set(config_check.RANGES) | set(config_check.CHOICES) <= set(_all_keys(CurateConfig, "")) | items
    assert set(config_check.DICT_KEYS) <= set(_all_keys(CurateConfig, ""))


def _all_keys(cls: type, prefix: str) -> list[str]:
    keys = []
    for name, hint in config_check.field_types(cls).items():
        keys += _all_keys(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [prefix + name]
    return keys


@pytest.mark.parametrize("override", ["caption.backend=vlm", "clips.min_s=-5"])
def test_curate_with_a_typo_fails_in_seconds_before_prefect_or_ray(tmp_path: Path, override: str) -> None:
    """The real command on a real (generated) video: exit 2 with the choices, nothing written."""
    video = tmp_path / "in" / "a.mp4"
    video.parent.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=duration=1:size=160x90:rate=25",
                    "-pix_fmt", "yuv420p", str(video)], check=True, timeout=60)
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    started = time.monotonic()
    cmd = [sys.executable, "-m", "vidloom.cli", "curate", str(video.parent), "--out", str(out)]
    cmd += ["--set", override]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert override.split("=")[0] in proc.stderr
    if "backend" in override:
        assert "signals, openai, vllm" in proc.stderr
    assert "prefect" not in proc.stderr.lower() and "ray" not in proc.stderr.lower()  # neither started
    assert not out.exists()
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_training_config_goes_through_the_same_checks() -> None:
    """training/config.py applies its layers with pipelines.config.apply: typed and checked too."""
    from training.config import load_train_config

    assert load_train_config("tiny", None, ["steps=12", "betas=0.8,0.9"]).betas == (0.8, 0.9)
    for override, message in [("steps=abc", "steps must be an integer; got 'abc'"),
                              ("lr=-1", "lr must be >= 0"),
                              ("betas=[0.9]", "betas must be a list of 2 items"),
                              ("text.hf.dtype=fp8", "text.hf.dtype must be one of 'float32', 'bfloat16'")]:
        with pytest.raises(config_check.ConfigError, match=re.escape(message)):
            load_train_config("tiny", None, [override])
