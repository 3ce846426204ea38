"""The settings values check themselves when built, naming the field and the fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lwbatch import Connection, Endpoint, Files, Hooks, Pacing, Token, UsageError


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Connection(timeout=True), "`timeout` must be a number of seconds, got True"),
        (lambda: Connection(timeout=0), "`timeout` must be > 0 seconds, got 0"),
        (lambda: Connection(endpoint="http://x"), "`endpoint` must be an Endpoint"),
        (lambda: Connection(token="abc"), "`token` must be a Token"),
        (
            lambda: Connection(
                endpoint=Endpoint(base_url="http://liftwing.invalid"), token=Token("t")
            ),
            "refusing to send the token over plain http to http://liftwing.invalid",
        ),
        (lambda: Connection(contact="me (you)"), "`contact` must be a single line"),
        (lambda: Pacing(concurrency=0), "`concurrency` must be a whole number >= 1, got 0"),
        (lambda: Pacing(linger=-1), "`linger` must be >= 0 seconds, got -1"),
        (lambda: Pacing(share=False, state_dir="s"), "`state_dir` is where a shared budget"),
        (lambda: Pacing(state_dir=" "), "`state_dir` is empty: give a directory"),
        (lambda: Files(format="csv"), "`format` 'csv': give one of parquet, long"),
        (lambda: Files(journal="yes"), "`journal` must be True, False or a Journal"),
        (lambda: Files(cache=123), "`cache` must be a path (an SQLite file) or a ScoreCache"),
        (lambda: Files(keep_columns=""), "`keep_columns` is empty: give column names"),
        (lambda: Files(batch_rows=0), "`batch_rows` must be a whole number >= 1, got 0"),
        (lambda: Hooks(progress=5), "`progress` must be a function (or None)"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_field_is_refused_when_the_value_is_built(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        make()
    assert str(refused.value).startswith(message)


def test_good_values_keep_what_they_were_given(tmp_path: Path) -> None:
    assert Files(cache=str(tmp_path / "c.db")).cache == tmp_path / "c.db"
    assert Files(keep_columns="note").keep_columns == ("note",)
    assert Files(keep_columns="all").keep_columns == "all"
    assert Pacing(state_dir=str(tmp_path)).state_dir == tmp_path
    assert Connection(contact=" me@example.org ").contact == "me@example.org"
    # A token never shows in a value's repr.
    assert "s3cret" not in repr(Connection(token=Token("s3cret")))


def test_a_value_given_as_none_is_its_default_and_a_key_column_is_not() -> None:
    from lwbatch.settings import RunSettings

    settings = RunSettings.of(
        ["enwiki-damaging"], connection=None, pacing=None, files=None, hooks=None
    )
    assert (settings.connection, settings.pacing, settings.files, settings.hooks) == (
        Connection(),
        Pacing(),
        Files(),
        Hooks(),
    )
    with pytest.raises(UsageError) as info:
        RunSettings.of(["enwiki-damaging"], id_column=None)
    assert str(info.value) == "`id_column` is empty: name the column that holds the rev_ids"
