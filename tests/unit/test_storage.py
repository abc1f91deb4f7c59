"""`--storage`: local paths, file://, s3:// and gs:// parsed once; where a run's files go."""

from __future__ import annotations

import pytest

from orchestrator.run.storage import parse, resolve, run_location, worker_env
from orchestrator.store.home import Home
from planners.errors import BadInput


@pytest.mark.parametrize("given,uri,local", [
    ("s3://bucket", "s3://bucket", False),
    ("s3://bucket/team/runs/", "s3://bucket/team/runs", False),
    ("S3://bucket//a//b", "s3://bucket/a/b", False),
    ("file:///srv/ckpt", "/srv/ckpt", True),
    ("file://localhost/srv/ckpt", "/srv/ckpt", True),
    ("/nfs/tally", "/nfs/tally", True),
])
def test_storage_uris(given, uri, local):
    st = parse(given)
    assert (st.uri, st.local) == (uri, local)


def test_a_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse("ckpt").uri == str(tmp_path / "ckpt")


@pytest.mark.parametrize("given,needle", [
    ("s3:bucket/x", "without '//'"),    # would be a local folder named "s3:"
    ("s3:/bucket/x", "without '//'"),
    ("ftp://host/x", "'ftp://' is not supported"),
    ("http://host/x", "not supported"),
    ("s3:///x", "must name a bucket"),
    ("s3://bucket/x?versionId=1", "must name a bucket"),
    ("file://host/x", "file:///PATH"),
    ("", "empty"),
])
def test_bad_storage_is_bad_input(given, needle):
    with pytest.raises(BadInput, match="--storage") as e:
        parse(given)
    assert needle in str(e.value)


def test_gs_needs_gcsfs(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_gcsfs(name, *a, **kw):
        if name == "gcsfs":
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_gcsfs)
    with pytest.raises(BadInput, match="needs the gcsfs package"):
        parse("gs://bucket/x")


def test_remote_run_keeps_its_local_files_under_tally_home(tmp_path, monkeypatch):
    home = Home(tmp_path / "home")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    where = run_location(parse("s3://bucket/team"), home, "r1")
    assert where.storage_path == "s3://bucket/team/r1"  # what the store records: the URI
    assert where.checkpoints == "s3://bucket/team/r1/checkpoints"
    assert where.local_dir == home.runs.absolute() / "r1"  # pid files, codecarbon, logs
    assert where.ray_storage == str(home.runs.absolute())  # Ray's own state stays local
    assert where.worker_env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert "AWS_SESSION_TOKEN" not in where.worker_env


def test_local_run_is_where_it_always_was(tmp_path):
    home = Home(tmp_path / "home")
    where = run_location(resolve(None, home), home, "r1")
    assert where.storage_path == str(home.runs.absolute() / "r1")
    assert where.checkpoints == str(home.runs.absolute() / "r1" / "checkpoints")
    assert where.local_dir == home.runs.absolute() / "r1"
    assert where.ray_storage == str(home.runs.absolute())
    assert worker_env(parse(str(tmp_path))) == {} == where.worker_env


def test_check_names_a_missing_bucket(s3_server):
    assert parse(s3_server + "/runs").check()
    with pytest.raises(BadInput, match="'no-such-bucket' does not exist at http://127.0.0.1"):
        parse("s3://no-such-bucket/runs").check()


def test_train_refuses_bad_storage_before_starting_anything(run_cli, home, tmp_path, monkeypatch,
                                                            s3_server):
    from tests.conftest import assert_bad_input

    monkeypatch.chdir(tmp_path)
    assert_bad_input(run_cli("train", "tiny", "--storage", "s3:bucket/x"),
                     "--storage", "s3:bucket/x")
    assert_bad_input(run_cli("train", "tiny", "--storage", "s3://no-such-bucket/x"),
                     "no-such-bucket", "does not exist")
    assert not (tmp_path / "s3:").exists()


def test_a_job_takes_the_stores_location_but_never_its_credentials(monkeypatch):
    """A job submitted through the Jobs API runs on the head, which lacks this shell's
    environment: the endpoint of an S3-compatible store and the region go with it, keys stay."""
    from orchestrator.run.storage import location_env, parse, worker_env

    for k, v in {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-3",
                 "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}.items():
        monkeypatch.setenv(k, v)
    bucket = parse("s3://team-bucket/runs")
    assert location_env(bucket) == {"AWS_ENDPOINT_URL": "http://minio:9000",
                                    "AWS_DEFAULT_REGION": "eu-west-3"}
    assert "AWS_SECRET_ACCESS_KEY" in worker_env(bucket)  # the local driver's own workers
    assert location_env(parse("/tmp/runs")) == {}
