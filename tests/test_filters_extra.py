"""``filters.extra``: user SQL rules after the built-in ones, checked at load, run sandboxed in DuckDB.

A real catalog (two generated videos curated up to the filter step: a textured clip every
built-in rule keeps, a flat grey one they reject) is re-decided with ``--rescore`` under extra
rules; bad predicates fail at config load naming the valid columns, and file access is refused
both by the check and by the evaluation sandbox.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from curation.db import Catalog
from pipelines import filters_extra
from pipelines.config_check import ConfigError

SMALL = {"name": "small", "where": "width * height < 640 * 360 AND luma > 50", "reason": "small picture"}


def make_video(path: Path, source: str) -> None:
    lavfi = f"{source}size=192x108:rate=25:duration=2"
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", lavfi, "-c:v", "libx264", "-crf", "12"]
    subprocess.run([*cmd, "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)


def cfg(*overrides: str, path: Path | None = None) -> Any:
    from pipelines.config import load_config

    base = ["runtime.runner=sequential", "runtime.quiet=true", "split.detector=content",
            "scores.text.enabled=false", "filters.max_artifacts=1.0"]  # keeps testsrc2's synthetic edges
    return load_config("tiny", path, [*base, *overrides])


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.curate import run_step_by_name

    src = tmp_path_factory.mktemp("in")
    make_video(src / "flat.mp4", "color=c=0x808080:")
    make_video(src / "pattern.mp4", "testsrc2=")
    out = tmp_path_factory.mktemp("out")
    for step in ("ingest", "split", "clips", "score", "filter"):
        run_step_by_name(step, [str(src)], out, cfg())
    return out


def rows(out: Path) -> dict[str, tuple[str, str | None]]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        got = cat.query("SELECT v.path, c.status, c.reject_reason FROM clips c "
                        "JOIN videos v USING (video_id)")[1]
    return {Path(p).stem: (s, r) for p, s, r in got}


def rescore(decided: Path, tmp: Path, c: Any) -> dict[str, tuple[str, str | None]]:
    from pipelines.curate import run_curate

    out = tmp / "out"
    if not out.exists():
        shutil.copytree(decided, out)
    run_curate([], out, c, rescore=True)
    return rows(out)


def test_an_extra_rule_rejects_with_its_reason_on_rescore(decided: Path, tmp_path: Path) -> None:
    before = rows(decided)
    assert before["pattern"] == ("kept", None) and before["flat"][0] == "rejected", before
    yaml = tmp_path / "c.yaml"
    yaml.write_text("filters:\n  extra:\n    - {name: small, reason: small picture,\n"
                    "       where: 'width * height < 640 * 360 AND luma > 50'}\n")
    after = rescore(decided, tmp_path, cfg(path=yaml))
    assert after["pattern"] == ("rejected", "small picture")
    assert after["flat"] == before["flat"]  # built-in rules first: its reason stands
    # removing the rule and rescoring keeps the clip again
    assert rescore(decided, tmp_path, cfg())["pattern"] == ("kept", None)


def test_rules_apply_in_order_and_null_never_matches(decided: Path, tmp_path: Path) -> None:
    rules = ('filters.extra=[{name: unmeasured, where: "aesthetic < 100", reason: no aesthetic}, '
             '{name: a, where: "luma > 0", reason: first}, {name: b, where: "luma > 0", reason: second}]')
    c = cfg(rules)  # the --set form: a YAML flow list
    assert [r["name"] for r in c.filters.extra] == ["unmeasured", "a", "b"]
    assert rescore(decided, tmp_path, c)["pattern"] == ("rejected", "first")


def test_the_report_counts_an_extra_reason(decided: Path, tmp_path: Path) -> None:
    from curation.report import write_report
    from pipelines.decide import rule_table

    c = cfg(f"filters.extra=[{SMALL}]".replace("'", '"'))
    rescore(decided, tmp_path, c)
    db = tmp_path / "out" / "catalog.duckdb"
    numbers = write_report(db, tmp_path / "r.html", rules=rule_table(c.filters))
    assert numbers["rejected"]["small picture"] == 1
    assert numbers["scorers"]["rules"]["small picture"] == 1
    assert rule_table(c.filters)[-1] == ("small picture", "filters.extra")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("lumaa < 30", "unknown column 'lumaa'; the columns are: clip_id, video_id,"),
        ("status = 'kept'", "unknown column 'status'"),  # the decision's own output
        ("luma <", "is not a SQL expression"),
        ("clip_id IN (SELECT clip_id FROM captions)", "may not hold a subquery"),
        ("EXISTS (SELECT 1)", "may not hold a subquery"),
        ("length(read_text('/etc/passwd')) > 0", "function 'read_text' is not allowed"),
        ("(SELECT count(*) FROM read_csv('/etc/passwd')) > 0", "subquery"),
        ("getenv('HOME') <> ''", "function 'getenv' is not allowed"),
        ("true; COPY clips TO '/tmp/leak.csv'", "is not a SQL expression"),  # a second statement
        ("true; ATTACH '/tmp/other.duckdb' AS other", "is not a SQL expression"),
        ("true) UNION SELECT clip_id FROM clips WHERE (true", "is not a SQL expression"),
    ],
)
def test_a_bad_predicate_fails_at_load_naming_what_is_allowed(where: str, message: str) -> None:
    from pipelines.config import apply, default

    rule = {"name": "r", "where": where, "reason": "r"}
    with pytest.raises(ConfigError, match="filters.extra\\[0\\] \\(r\\)") as e:
        apply(default(), {"filters": {"extra": [rule]}})  # as a YAML file or a Prefect parameter
    assert message in str(e.value)
    if "unknown column" in message and "lumaa" in where:
        assert "luma_high" in str(e.value) and "text_area" in str(e.value)  # the score columns too


def test_malformed_rules_are_refused() -> None:
    for extra, message in [
        ('[{name: r}]', "keys are name, where (required) and reason"),
        ('[{name: r, where: "luma > 1", why: x}]', "keys are name, where (required) and reason"),
        ('[{name: "two words", where: "luma > 1"}]', "must be letters, digits and '_'"),
        ('[{name: r, where: "luma > 1", reason: not_scored}]', "is vidloom's own"),
        ('[{name: r, where: "luma > 1"}, {name: r, where: "luma > 2"}]', "is used twice"),
    ]:
        with pytest.raises(ConfigError, match="filters.extra") as e:
            cfg(f"filters.extra={extra}")
        assert message in str(e.value), (extra, str(e.value))


def test_a_reason_of_a_built_in_rule_is_refused_at_decide(decided: Path, tmp_path: Path) -> None:
    c = cfg('filters.extra=[{name: r, where: "luma > 1", reason: blurry}]')
    with pytest.raises(ConfigError, match="reason\\(s\\) \\['blurry'\\] are built-in rules'"):
        rescore(decided, tmp_path, c)


def test_the_evaluation_sandbox_refuses_file_access_even_unchecked(decided: Path, tmp_path: Path) -> None:
    """Defence in depth: a rule that skipped the checks still cannot read a file."""
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    with Catalog(decided / "catalog.duckdb", read_only=True) as cat:
        split = cat.query("SELECT any_value(split_hash) FROM clips")[1][0][0]
        ok = filters_extra.matches(cat.con, split, [{"where": "luma > 0", "columns": "luma"}])
        assert len(ok[0]) == 2
        for where in (f"length((SELECT content FROM read_text('{secret}'))) > 0",
                      f"(SELECT count(*) FROM read_csv('{secret}')) > 0"):
            with pytest.raises(duckdb.Error, match="(?i)external access|disabled|permission"):
                filters_extra.matches(cat.con, split, [{"where": where, "columns": "luma"}])
