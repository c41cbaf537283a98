"""The production topology in miniature, for tests marked ``cluster``: a local S3 (moto's server
on a free loopback port) and a 2-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU per node).

Both are started and stopped by the tests themselves. The S3 endpoint and dummy credentials are
exported as the standard ``AWS_*`` variables *before* any Ray node starts, so every node's
workers (and pyarrow's ``S3FileSystem.from_uri``, Ray Data and Ray Train) reach the same server.
Readiness is an event (the port accepts, the nodes register), never a fixed sleep.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

# An interpreter that has moto[server] (default: this one; the dev extra installs it). A command
# line is accepted too (split like a shell would), e.g. a wrapper that sets PYTHONPATH.
MOTO_PYTHON_ENV = "S1RAY_TEST_MOTO_PYTHON"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # retry interval of a readiness probe, not a synchronisation sleep
    raise TimeoutError(f"moto server not listening on {port} after {timeout} s")


def wait_for(predicate, what: str, timeout: float = 600, alive=None) -> float:
    """Poll ``predicate`` until it holds (the probe's interval is not a synchronisation sleep: the
    caller proceeds on the event itself); ``alive``: give up once it turns false. Returns the
    monotonic time the event was seen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive is not None and not alive():
            raise AssertionError(f"gave up waiting for {what}: the run ended first")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen in {timeout} s")
        time.sleep(0.1)
    return time.monotonic()


@dataclass
class S3:
    endpoint: str
    bucket: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(self.uri())[0]


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server with one bucket; AWS_* point at it for this process and its children
    (restored after the module, so no other test sees them)."""
    python = os.environ.get(MOTO_PYTHON_ENV)
    if python is None:
        if importlib.util.find_spec("moto") is None:
            pytest.fail("moto is not installed: pip install -e '.[dev]' (or set S1RAY_TEST_MOTO_PYTHON)")
        python = sys.executable
    port = free_port()
    log = open(os.devnull, "wb")
    proc = subprocess.Popen([*shlex.split(python), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log)
    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL"]}
    try:
        wait_port(port, proc)
        os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        import pyarrow.fs as pafs

        bucket = f"s1ray-{uuid.uuid4().hex[:8]}"
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True,
                          access_key="testing", secret_key="testing", region="us-east-1").create_dir(bucket)
        yield S3(endpoint=os.environ["AWS_ENDPOINT_URL"], bucket=bucket)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    """A 2-node Ray cluster (1 CPU each; the second node carries resource ``node2``), with this
    process connected as the driver. Yields the ``Cluster`` (tests may add/remove nodes)."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node, resources={"node2": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
