"""A scorer added from one file (this one) shows up in the catalog, the decision and the report.

``LumaSpreadScorer`` below is the whole scorer: a stage, its config section, its column and its
reject rule with a position. Registering it (the ``luma_spread`` fixture; a scorer's own module
calls ``register`` at import, this test does it in a fixture so the rest of the session keeps the
built-in set) is the only change: a curation run on two generated videos (a flat grey one and
testsrc2) then stores ``luma_std`` in the catalog, rejects the flat clip as ``flat``, and the
report draws the column with its threshold and counts the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import pipelines.decide_columns  # noqa: F401  (the import-time constants REASONS/RULE_ORDER: built-ins only)
from curation.db import Catalog
from curation.score_columns import ScoreColumn
from pipelines import config_check, scorers
from pipelines.clip_frames import clip_tiny, luma
from pipelines.scorers import Rule, ScorerSpec
from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import ClipTask


# --- the scorer: one file's worth ---------------------------------------------------------------
@dataclass
class LumaSpreadConfig:
    """scores.luma_spread: ``step`` measures (in the stage's params), ``min_std`` decides (unhashed)."""

    step: int = 1  # every step-th tiny frame
    stat: str = "std"  # 'std' of the luma, or its 'range' (max - min)
    min_std: float = unhashed(4.0)  # 'flat' below this (0-255 luma levels)


@dataclass
class LumaSpreadScorer(LumaSpreadConfig, Stage[ClipTask, ClipTask]):
    """Sets ``luma_std``: how much the luma varies over the clip's tiny frames (a flat card: 0)."""

    name: ClassVar[str] = "luma_spread"
    version: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources(cpus=0.25)
    columns: ClassVar[tuple[str, ...]] = ("luma_std",)

    def process(self, task: ClipTask) -> ClipTask:
        if task.error:
            return task
        y = luma(np.asarray(clip_tiny(task))[:: self.step]).astype(np.float64)
        task.clip.scores.luma_std = round(float(y.std() if self.stat == "std" else np.ptp(y)), 4)
        return task


SPEC = ScorerSpec(
    name="luma_spread", stage=LumaSpreadScorer, cost=15, key="luma_spread", config=LumaSpreadConfig,
    columns=(ScoreColumn("luma_std", "DOUBLE", "std of the luma over the tiny frames, 0-255"),),
    # after 'black' (100), before 'dark' (110): a flat grey card is 'flat', not 'blurry' or 'frozen'
    rules=(Rule("flat", 105, lambda x, f, s: x["luma_std"] < s.min_std, reads=("luma_std",),
                threshold=("luma_std", "min", "scores.luma_spread.min_std")),),
    ranges={"min_std": (0, 255, False), "step": (1, None, False)},
    choices={"stat": ("std", "range")},
)


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def luma_spread() -> Iterator[ScorerSpec]:
    spec = scorers.register(SPEC)
    try:
        yield spec
    finally:
        scorers.unregister(SPEC.name)


def make_video(path: Path, source: str) -> None:
    lavfi = f"{source}size=192x108:rate=25:duration=2"
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", lavfi, "-c:v", "libx264", "-crf", "12"]
    subprocess.run([*cmd, "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)


def tiny_cfg(*overrides: str) -> Any:
    from pipelines.config import load_config

    # no OCR (RapidOCR would dominate the run), PySceneDetect's cuts (no TransNetV2 to load); no
    # aesthetic weights here: that scorer is skipped
    return load_config("tiny", None, ["runtime.runner=sequential", "runtime.quiet=true",
                                      "split.detector=content", "scores.text.enabled=false", *overrides])


@pytest.fixture(scope="module")
def curated(luma_spread: ScorerSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.curate import run_curate

    src = tmp_path_factory.mktemp("in")
    make_video(src / "flat.mp4", "color=c=0x808080:")
    make_video(src / "pattern.mp4", "testsrc2=")
    out = tmp_path_factory.mktemp("out")
    run_curate([str(src)], out, tiny_cfg())
    return out


def clip_rows(out: Path) -> dict[str, dict[str, Any]]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts("SELECT v.path, c.clip_id, c.status, c.reject_reason, c.luma_std FROM clips c "
                         "JOIN videos v USING (video_id)")
    return {Path(r["path"]).stem: r for r in rows}


# --- tests ----------------------------------------------------------------------------------------
def test_the_new_scorer_has_a_column_a_decision_and_a_report_entry(curated: Path, tmp_path: Path) -> None:
    from curation.report import write_report
    from pipelines.decide import rule_table, thresholds

    with Catalog(curated / "catalog.duckdb", read_only=True) as cat:
        types = dict(cat.query("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_name = 'clips'")[1])
        done = {r[0] for r in cat.query("SELECT DISTINCT stage FROM stage_done")[1]}
    assert types["luma_std"] == "DOUBLE"  # a catalog column, typed as registered
    assert "score:luma_spread" in done  # run and marked done like every scorer
    rows = clip_rows(curated)
    assert set(rows) == {"flat", "pattern"}, rows
    assert rows["flat"]["luma_std"] < 1.0 and rows["pattern"]["luma_std"] > 20.0
    assert (rows["flat"]["status"], rows["flat"]["reject_reason"]) == ("rejected", "flat")
    assert rows["pattern"]["reject_reason"] != "flat"

    cfg = tiny_cfg()
    numbers = write_report(curated / "catalog.duckdb", tmp_path / "r.html",
                           thresholds=thresholds(cfg.filters, cfg.scores), rules=rule_table(cfg.filters))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert numbers["histograms"]["luma_std"] == 2  # drawn from both clips
    assert numbers["rejected"]["flat"] == 1 and 'data-count="rejected:flat"' in page
    assert numbers["scorers"]["columns"]["luma_std"] == 2 and numbers["scorers"]["rules"]["flat"] == 1
    assert 'data-column="luma_std"' in page and 'data-rule="flat"' in page
    assert thresholds(cfg.filters, cfg.scores)["luma_std"] == ("min", 4.0)


def test_its_threshold_is_set_in_its_section_and_a_rescore_applies_it(curated: Path, tmp_path: Path) -> None:
    import shutil

    from pipelines.curate import run_curate

    out = tmp_path / "copy"
    shutil.copytree(curated, out)
    run_curate([], out, tiny_cfg("scores.luma_spread.min_std=0"), rescore=True)
    rows = clip_rows(out)
    assert rows["flat"]["reject_reason"] not in (None, "flat")  # now a later rule (blurry, frozen ...)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        runs = cat.query("SELECT count(*) FROM runs")[1][0][0]
    assert runs == 2


def test_its_config_section_is_typed_and_checked(luma_spread: ScorerSpec) -> None:
    from pipelines.config import CurateConfig, load_config, to_yaml

    cfg = load_config("tiny", None, ["scores.luma_spread.step=2", "scores.luma_spread.stat=range"])
    assert (cfg.scores.luma_spread.step, cfg.scores.luma_spread.stat) == (2, "range")
    assert "luma_spread:" in to_yaml(CurateConfig())  # written beside every output with the rest
    stage = luma_spread.make(cfg.scores.luma_spread)
    assert (stage.step, stage.stat) == (2, "range")
    assert "min_std" not in stage.params()  # it decides, it does not measure: no rescoring for it
    for override, message in [
        ("scores.luma_spread.min_std=-1", "scores.luma_spread.min_std must be >= 0 and <= 255; got -1.0"),
        ("scores.luma_spread.step=0", "scores.luma_spread.step must be >= 1"),
        ("scores.luma_spread.stat=max", "scores.luma_spread.stat must be one of std, range; got 'max'"),
        ("scores.luma_spread.step=two", "scores.luma_spread.step must be an integer"),
        ("scores.luma_spread.bogus=1", "unknown config key 'scores.luma_spread.bogus'"),
    ]:
        with pytest.raises(config_check.ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
            load_config("tiny", None, [override])


def test_registration_is_checked(luma_spread: ScorerSpec) -> None:
    from curation import schema
    from pipelines.config import FilterConfig
    from pipelines.decide import decision_rules, rules
    from pipelines.stages.score_gate import gate_rules

    order = [r.reason for r in decision_rules()]
    assert order.index("black") < order.index("flat") < order.index("dark")
    flat = dict(rules(FilterConfig()))["flat"]  # the row form, derived from the mask
    assert flat({"luma_std": 1.0}) and not flat({"luma_std": 9.0}) and not flat({"luma_std": None})
    assert "flat" in [n for n, _ in gate_rules("overlay_text", FilterConfig())]  # before OCR's gate
    assert schema.ClipScores(luma_std=2.0).luma_std == 2.0
    with pytest.raises(ValueError, match="collides with 'flat'"):
        scorers.register(ScorerSpec(name="other", stage=LumaSpreadScorer, cost=99, columns=("luma_std",),
                                    rules=(Rule("other", 105, lambda x, f, s: x["luma"] < 0),)))
    with pytest.raises(ValueError, match="already a column of scorer 'luma_spread'"):
        scorers.register(ScorerSpec(name="other", stage=type("Other", (), {"columns": ("luma_std",)}),
                                    cost=99, columns=(ScoreColumn("luma_std", "DOUBLE", "again"),)))
    with pytest.raises(ValueError, match="already a column of the clip row"):
        scorers.register(ScorerSpec(name="other", stage=type("Other", (), {"columns": ("width",)}), cost=99,
                                    columns=(ScoreColumn("width", "DOUBLE", "again"),)))
    with pytest.raises(TypeError, match="unknown score column"):
        schema.ClipScores(luma_stdd=1.0)
    assert "other" not in [s.name for s in scorers.specs()]


def test_unregistering_removes_the_column_from_the_row() -> None:
    from curation import schema
    from curation.db import TABLE_COLUMNS

    spec = ScorerSpec(name="probe", stage=type("Probe", (), {"columns": ("probe_value",)}), cost=99,
                      columns=(ScoreColumn("probe_value", "INTEGER", "a test column"),))
    scorers.register(spec)
    try:
        assert TABLE_COLUMNS["clips"][-1] == "probe_value"
        assert schema.ClipScores(probe_value=3).probe_value == 3
    finally:
        scorers.unregister("probe")
    assert "probe_value" not in TABLE_COLUMNS["clips"]
    with pytest.raises(TypeError):
        schema.ClipScores(probe_value=1)


PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

from curation.score_columns import ScoreColumn
from pipelines.scorers import Rule, ScorerSpec, register
from pipelines.stage import Stage


@dataclass
class SizeConfig:
    min_pixels: int = 100


@dataclass
class SizeScorer(Stage):
    name: ClassVar[str] = "plugin_size"
    columns: ClassVar[tuple[str, ...]] = ("plugin_pixels",)

    def process(self, task):
        task.clip.scores.plugin_pixels = task.clip.width * task.clip.height
        return task


register(ScorerSpec(name="plugin_size", stage=SizeScorer, cost=50, key="plugin_size", config=SizeConfig,
                    columns=(ScoreColumn("plugin_pixels", "BIGINT", "width x height"),),
                    rules=(Rule("too_few_pixels", 450, lambda x, f, s: x["plugin_pixels"] < s.min_pixels,
                                reads=("plugin_pixels",)),)))
'''


def test_a_scorer_outside_vidloom_is_loaded_from_vidloom_scorers(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pipelines.config import load_config
    from pipelines.decide import decision_rules
    from pipelines.score_step import build_scorers

    (tmp_path / "my_size_scorer.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(scorers.PLUGINS_ENV, "my_size_scorer")
    try:
        cfg = load_config("tiny", None, ["scores.plugin_size.min_pixels=5", "scores.text.enabled=false"])
        assert cfg.scores.plugin_size.min_pixels == 5
        assert "plugin_size" in [s.name for s in build_scorers(cfg)[0]]
        assert [r.reason for r in decision_rules()][-5] == "too_few_pixels"  # 450: before 'duplicate'
    finally:
        scorers.unregister("plugin_size")
        scorers._plugins.discard("my_size_scorer")
        sys.modules.pop("my_size_scorer", None)


@pytest.mark.parametrize(("override", "message"), [
    ("scores.text.max_frames=0", "scores.text.max_frames must be >= 1; got 0"),
    ("scores.quality.bar_frames=2", "scores.quality.bar_frames must be >= 0 and <= 1; got 2.0"),
    ("scores.motion.flow_size=3", "scores.motion.flow_size must be >= 16; got 3"),
    ("scores.artifacts.severe_blockiness=0", "scores.artifacts.severe_blockiness must be > 0; got 0.0"),
])
def test_the_built_in_sections_ranges_come_from_their_scorer_files(override: str, message: str) -> None:
    from pipelines.config import load_config

    with pytest.raises(config_check.ConfigError) as e:
        load_config("default", None, [override])
    assert message in str(e.value)
    assert not any(k.startswith("scores.") for k in config_check.RANGES)  # one place: the scorer's file
