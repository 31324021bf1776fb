"""The driver JVM's class archive: made by `make setup`, mapped by every local driver, and never
put in place unless a JVM can map it whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.classcache import check_class_archive, make_class_archive
from jobs.spark import class_archive, with_class_sharing


@pytest.fixture(scope="module")
def archive() -> Path:
    path = class_archive()
    assert path.is_file(), f"no class archive at {path}: `make setup` makes it"
    return path


def test_the_suites_driver_maps_the_archive(spark: SparkSession, archive: Path) -> None:
    # The JVM takes the option and then either maps the file or silently loads classes as before:
    # only its memory map tells which.
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()  # type: ignore[union-attr]
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert str(archive.resolve()) in maps


def test_the_archive_maps_whole_in_a_driver_launched_as_pyspark_launches_it(archive: Path) -> None:
    check_class_archive(archive)


def test_a_truncated_archive_is_refused_without_a_crash_report_left_behind(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truncated = tmp_path / "truncated.jsa"
    with archive.open("rb") as whole, truncated.open("wb") as part:
        part.write(whole.read(archive.stat().st_size // 2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="does not map"):
        check_class_archive(truncated)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.jsa"]


def test_a_file_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsa"
    bogus.write_bytes(b"not a class archive\n" * 100)
    with pytest.raises(RuntimeError, match="does not map"):
        check_class_archive(bogus)


def test_a_failed_training_night_leaves_the_archive_in_place_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "postloan.jsa"
    out.write_bytes(b"the archive set-up made before")
    # An empty conf folder: the training night is refused before its JVM starts.
    (tmp_path / "conf").mkdir()
    monkeypatch.setenv("POSTLOAN_CONF", str(tmp_path / "conf"))
    with pytest.raises(RuntimeError, match="training night"):
        make_class_archive(out, loans=10)
    assert out.read_bytes() == b"the archive set-up made before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "postloan.jsa"]


def test_the_driver_options_keep_the_settings_own(tmp_path: Path) -> None:
    archive = tmp_path / "postloan.jsa"
    conf = {"spark.driver.memory": "8g", "spark.driver.extraJavaOptions": "-XX:+UseG1GC"}
    assert with_class_sharing(conf, archive) == conf  # no archive: nothing added
    archive.write_bytes(b"x")
    assert with_class_sharing(conf, archive) == {
        "spark.driver.memory": "8g",
        "spark.driver.extraJavaOptions": (
            f"-XX:+UseG1GC -XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
        ),
    }
    assert with_class_sharing({}, archive) == {
        "spark.driver.extraJavaOptions": f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
    }
