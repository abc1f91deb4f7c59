"""`s3_server`: a real S3 API on 127.0.0.1 (moto's server mode) with one empty bucket.

The fixture starts `moto.server.ThreadedMotoServer` on a free port, points every S3 client of
this process (s3fs/botocore, and the Ray workers a local Ray starts from it) at it through the
standard `AWS_ENDPOINT_URL`, with dummy credentials and a region, creates a bucket, yields the
bucket's URI (`s3://tally-test-<hex>`) and stops the server. Each test gets a new bucket.
"""

from __future__ import annotations

import uuid

import pytest

S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # no cached client bound to an older endpoint
    bucket = f"tally-test-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    try:
        yield f"s3://{bucket}"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
