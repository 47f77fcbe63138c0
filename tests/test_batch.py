"""python -m emotion.batch: a folder to Parquet with the real MTCNN on the shared photos, both engines."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emotion.batch import COLUMNS, bench_bulk, run
from emotion.batch.__main__ import main
from emotion.batch.sources import list_images, read_source
from emotion.labels import LABELS
from tests.conftest import ROOT, photo

FACES = {"codait_bryan.png": 1, "nasa_apollo11_crew.jpg": 3, "luciano.png": 1, "noface_pen.jpg": 0}


def link(target: Path, at: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target)
    return at


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Real photos (one in a sub-folder, one without a face), two broken files and a file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    link(photo("codait_bryan.png"), folder / "codait_bryan.png")
    link(photo("nasa_apollo11_crew.jpg"), folder / "nasa_apollo11_crew.jpg")
    link(photo("noface_pen.jpg"), folder / "noface_pen.jpg")
    link(photo("codait_luciano.png"), folder / "sub" / "deeper" / "luciano.png")
    (folder / "truncated.jpg").write_bytes(photo("pexels_angry.jpg").read_bytes()[:20_000])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not listed")
    (folder / ".hidden.jpg").write_text("hidden files are not images of the folder")
    return folder


def by_name(table) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in table.sort_by([("path", "ascending"), ("face", "ascending")]).to_pylist():
        rows.setdefault(Path(row["path"]).name, []).append(row)
    return rows


@pytest.fixture(scope="module")
def local_table(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "faces.parquet"
    # 3 images per batch and a part every 2 images: batches across images, several parts assembled at the end.
    summary = run(source, out, engine="local", workers=1, batch_size=3, part_size=2, progress=False)
    assert summary.analysed == 6 and summary.skipped == 0
    assert not out.with_name("faces.parquet.parts").exists()  # assembled, parts removed
    return pq.read_table(out)


def test_one_row_per_face_per_image_without_a_face_and_per_unreadable_file(local_table):
    assert tuple(local_table.column_names) == COLUMNS
    rows = by_name(local_table)
    assert sorted(rows) == sorted([*FACES, "truncated.jpg", "empty.png"])  # recursive; .txt and hidden skipped
    for name, n in FACES.items():
        if n:
            assert [r["face"] for r in rows[name]] == list(range(n)), name
            for r in rows[name]:
                assert r["error"] is None and r["x1"] < r["x2"] and r["y1"] < r["y2"] and r["detection_score"] > 0.9
                scores = {k: r[k] for k in LABELS}
                assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-5)
                assert r["label"] == max(scores, key=scores.get)
                assert isinstance(r["uncertain"], bool)
    (pen,) = rows["noface_pen.jpg"]
    assert pen["face"] is None and pen["label"] is None and pen["error"] is None and pen["happy"] is None
    (empty,) = rows["empty.png"]
    assert empty["error"] == "The file is empty." and empty["face"] is None
    (truncated,) = rows["truncated.jpg"]
    assert truncated["error"] and truncated["face"] is None and truncated["label"] is None


def test_rows_hold_what_the_pipeline_finds(local_table):
    from emotion.pipeline import Pipeline

    analysis = Pipeline().analyze(photo("nasa_apollo11_crew.jpg"))
    rows = by_name(local_table)["nasa_apollo11_crew.jpg"]
    assert [(r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows] == [f.box for f in analysis.faces]
    for r, face in zip(rows, analysis.faces):
        assert r["label"] == face.label and r["uncertain"] == face.uncertain
        assert all(abs(r[k] - face.scores[k]) < 1e-5 for k in LABELS)


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray")
    import ray

    from emotion.batch.ray_engine import connect

    started = connect(num_cpus=2)  # the one Ray start of this module (joins RAY_ADDRESS where that is set)
    yield ray
    if started:
        ray.shutdown()


def test_ray_engine_gives_the_same_rows_as_the_local_one(ray_cluster, source, local_table, tmp_path):
    out = tmp_path / "ray.parquet"
    summary = run(source, out, engine="ray", workers=2, batch_size=2, part_size=3, progress=False)
    assert summary.analysed == 6
    ray_rows = pq.read_table(out).sort_by([("path", "ascending"), ("face", "ascending")]).to_pylist()
    local_rows = local_table.sort_by([("path", "ascending"), ("face", "ascending")]).to_pylist()
    assert len(ray_rows) == len(local_rows) == 8  # 5 faces, 1 image without, 2 unreadable
    for a, b in zip(ray_rows, local_rows):
        for column in COLUMNS:
            if isinstance(a[column], float):
                assert abs(a[column] - b[column]) < 1e-5, (a["path"], column)
            else:
                assert a[column] == b[column], (a["path"], column)


def test_ray_actors_one_per_gpu_else_one_per_cpu():
    pytest.importorskip("ray")
    from emotion.batch.ray_engine import actor_plan

    assert actor_plan({"CPU": 16.0, "GPU": 4.0}, None) == (4, 1.0, 1.0)  # (actors, GPUs, CPUs) each
    assert actor_plan({"CPU": 16.0, "GPU": 4.0}, 8) == (8, 0.5, 1.0)  # two actors share each GPU
    assert actor_plan({"CPU": 2.0}, None) == (2, 0.0, 1.0)
    assert actor_plan({"CPU": 2.0}, 4) == (4, 0.0, 0.5)  # never more than the cluster has: the pool starts


def test_a_killed_run_resumes_without_duplicates(source, local_table, tmp_path):
    folder = tmp_path / "many"
    photos = ["codait_bryan.png", "codait_luciano.png", "nasa_apollo11_crew.jpg"]
    for i in range(6):
        link(photo(photos[i % 3]), folder / f"{i:02d}_{photos[i % 3]}")
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    command = [sys.executable, "-m", "emotion.batch", str(folder), "--out", str(out), "--workers", "2"]
    command += ["--batch-size", "1", "--part-size", "1", "--no-progress"]
    # Its own process group: the kill reaches the worker processes too, as when a machine dies.
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        stderr = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, stderr  # really stopped, not finished
    assert not out.exists()
    written = {p for part in parts.glob("part-*.parquet") for p in pq.read_table(part).column("path").to_pylist()}
    assert 1 <= len(written) < 6
    (parts / "part-999999.parquet.tmp").write_bytes(b"half a file, as a kill during a write leaves it")

    summary = run(folder, out, workers=1, batch_size=4, progress=False)
    assert (summary.skipped, summary.analysed) == (len(written), 6 - len(written))
    table = pq.read_table(out)
    keys = list(zip(table.column("path").to_pylist(), table.column("face").to_pylist()))
    assert len(keys) == len(set(keys)) == 2 * (1 + 1 + 3)
    assert {Path(p).name for p, _ in keys} == {p.name for p in folder.iterdir()}
    # The rows of every copy are those of its photo in the first run: nothing was mixed up on the way.
    reference = by_name(local_table)
    for name, rows in by_name(table).items():
        original = reference[name[3:].replace("codait_luciano", "luciano")]
        assert [(r["x1"], r["face"], r["label"]) for r in rows] == [(r["x1"], r["face"], r["label"]) for r in original]

    again = run(folder, out, workers=1, progress=False)  # complete: nothing to do, nothing doubled
    assert (again.analysed, again.skipped) == (0, 6) and pq.read_table(out).num_rows == table.num_rows


def test_a_run_stopped_after_assembling_but_before_cleaning_up_has_no_duplicates(source, local_table, tmp_path):
    out = tmp_path / "faces.parquet"
    pq.write_table(local_table, out)
    parts = tmp_path / "faces.parquet.parts"
    parts.mkdir()
    shutil.copy(out, parts / "part-000000.parquet")  # the parts the dead run had already assembled
    summary = run(source, out, progress=False)
    assert summary.analysed == 0
    assert pq.read_table(out).num_rows == local_table.num_rows and not parts.exists()


def test_a_list_file_a_missing_file_in_it_and_the_progress_bar(tmp_path, capsys):
    link(photo("codait_bryan.png"), tmp_path / "photos" / "bryan.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# photos to analyse\nphotos/bryan.png\n\n/nowhere/gone.jpg\nphotos/bryan.png\n")
    assert list_images(listing) == [str(tmp_path / "photos" / "bryan.png"), "/nowhere/gone.jpg"]
    run(listing, tmp_path / "out.parquet", workers=1, progress=True)
    rows = by_name(pq.read_table(tmp_path / "out.parquet"))
    assert rows["bryan.png"][0]["label"] and rows["gone.jpg"][0]["error"] == "No such image file: gone.jpg"
    bar = capsys.readouterr().err  # tqdm's bar on stderr: done/total, elapsed<remaining (the ETA), the rate
    assert "2/2 [" in bar and "<" in bar and re.search(r"[\d.]+(img/s|s/img)", bar)


def test_a_uri_folder_is_listed_and_read_through_pyarrow(source):
    paths = list_images(source.as_uri())
    assert paths == [Path(p).as_uri() for p in list_images(source)] and len(paths) == 6
    bryan = next(p for p in paths if p.endswith("codait_bryan.png"))
    assert read_source(bryan) == photo("codait_bryan.png").read_bytes()


def test_clear_errors_instead_of_tracebacks(tmp_path, source, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([str(source), "--out", str(blocker / "o.parquet")]) == 2
    assert "Cannot write --out" in capsys.readouterr().err
    assert main([str(source), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main([str(source), "--out", str(tmp_path / "o.parquet"), "--model", str(tmp_path / "no-model")]) == 2
    assert "neither an existing model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(source), "--out", str(tmp_path / "o.parquet"), "--engine", "spark"])
    assert exit_.value.code == 2 and "invalid choice: 'spark'" in capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err


def test_resuming_with_another_model_is_refused(tmp_path, local_table, source, capsys):
    out = tmp_path / "faces.parquet"
    pq.write_table(local_table.replace_schema_metadata({b"emotion.model": b"someone/else"}), out)
    assert main([str(source), "--out", str(out), "--no-progress"]) == 2
    assert "holds results of the model 'someone/else'" in capsys.readouterr().err


def test_help_documents_the_output_and_resuming(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "FILE.parquet.parts" in text and "--engine" in text and "resume" in text


def test_bench_bulk_measures_each_engine(tmp_path):
    result = bench_bulk([photo("codait_bryan.png")], n=3, engines=("local",), workers=1)
    assert set(result) == {"local"} and result["local"] > 0
