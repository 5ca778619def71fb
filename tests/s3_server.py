"""A throwaway S3 endpoint for tests: moto's server mode on 127.0.0.1, in this process.

moto answers the S3 API over real HTTP, so boto3 runs its whole path (signing, multipart,
retries, error parsing) as it would against AWS, MinIO or Ceph. Objects live in moto's
memory, shared by every server in the process: tests keep apart by using their own bucket.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.postgres_server import free_port

# Credentials moto accepts; set in the environment by the fixtures that use the server.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """One moto server; ``endpoint`` is its URL, ``new_bucket()`` makes an empty bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False
        self._client: Any = None

    def start(self) -> S3Server:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server.start()
        self.running = True
        return self

    def restart(self) -> None:
        """Start again on the same port (after ``stop``); moto keeps its objects meanwhile."""
        self.stop()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.start()

    def stop(self) -> None:
        if self.running:
            self._server.stop()
            self.running = False

    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        name = f"models-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
