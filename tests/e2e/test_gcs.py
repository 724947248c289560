"""The job on Google Cloud Storage end to end: inputs, outputs and the score cache on `gs://`,
against a real GCS emulator (fake-gcs-server), as `s3://` runs against SeaweedFS."""

import pyarrow as pa
import pyarrow.parquet as pq

from localnat.cli import main
from localnat.curate.job import run_job
from localnat.curate.storage import list_files, read_parquet_dir, read_text, write_bytes
from localnat.testing.jobs import config, corpus


def test_a_night_and_a_cached_night_on_gcs(ray_local, gcs, tiny_student, capsys):
    df = corpus().head(20)
    for i in range(0, 20, 5):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(df.iloc[i : i + 5], preserve_index=False), sink)
        write_bytes(f"gs://inputs/night/s{i:02d}.parquet", sink.getvalue().to_pybytes())
    runs = {}
    for run_id in ("g1", "g2"):
        cfg = config(
            tiny_student,
            ["gs://inputs/night/"],
            "gs://runs/localnat",
            run_id=run_id,
            cache="gs://runs/cache",
        )
        runs[run_id] = run_job(cfg)
    first, second = runs["g1"]["counts"], runs["g2"]["counts"]
    assert first["input_rows"] == 20 == first["scored"] + first["rejected"]
    assert first["cache_misses"] == first["scored"] and first["cache_hits"] == 0
    assert second["cache_hits"] == first["scored"] and second["cache_misses"] == 0
    for run_id in runs:
        scores = read_parquet_dir(f"gs://runs/localnat/{run_id}/scores").to_pandas()
        assert len(scores) == first["scored"] and scores["row_id"].is_unique
        assert read_text(f"gs://runs/localnat/{run_id}/manifest.json")
        assert any(u.endswith("teachers.png") for u in list_files(f"gs://runs/localnat/{run_id}"))
    a = read_parquet_dir("gs://runs/localnat/g1/scores").to_pandas().set_index("row_id")
    b = read_parquet_dir("gs://runs/localnat/g2/scores").to_pandas().set_index("row_id")
    assert (a["local_nat"] == b.loc[a.index, "local_nat"]).all()  # the cache's bits
    capsys.readouterr()
    assert main(["show", "gs://runs/localnat/g2"]) == 0
    assert "score cache: 0 rows scored by the student, 20 reused" in capsys.readouterr().out
