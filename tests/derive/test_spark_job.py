"""``ciolake-spark``'s command line, before any Spark starts: bad flags and a missing pyspark
are one clear line (the job itself runs in tests/interop/test_spark_derive.py)."""

from __future__ import annotations

import sys

import pytest

from ciolake.derive import spark_job


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--every", "0"], "--every must be > 0"),
        (["--timestamp-tolerance-s", "-1"], "--timestamp-tolerance-s must be >= 0"),
        (["--every", "soon"], "invalid float value: 'soon'"),
    ],
)
def test_bad_flags_are_refused_before_spark_starts(
    capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    with pytest.raises(SystemExit) as raised:
        spark_job.main(["derive", "--tables-uri", "/nowhere", *flags])
    assert raised.value.code == 2
    assert said in capsys.readouterr().err


def test_without_pyspark_the_job_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(SystemExit) as raised:
        spark_job.main(["derive", "--tables-uri", "/nowhere"])
    assert str(raised.value).startswith("error: ciolake-spark needs pyspark and delta-spark")
    assert "pip install 'ciolake[spark]'" in str(raised.value)
