"""Unity Catalog's credential vending, over the IAM of the S3 test server (moto with ``iam``).

Each vend is the access key of a new user whose policy covers only the table's prefix, as
Unity Catalog scopes the credentials it vends to the table's path (a user each: IAM allows two
keys per user, and two processes renewing one table's keys hold more), valid for
``lifetime_s`` and deleted once expired (a thread looks every 0.2 s), so a writer that does
not renew them is refused by the store, as S3 refuses an expired STS token.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support import S3Server


@dataclass
class IssuedKey:
    table_id: str
    user: str
    key_id: str
    secret: str
    expires_at: float


@dataclass
class IamVending:
    """The ``vend`` of the fake workspace, for the tables ``add_table`` was told of."""

    server: S3Server
    lifetime_s: float
    issued: list[IssuedKey] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    _policies: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        import boto3

        self._iam = boto3.client(
            "iam", endpoint_url=self.server.endpoint, **self.server.boto_credentials
        )
        threading.Thread(target=self._revoke_loop, daemon=True).start()

    def add_table(self, table_id: str, prefix: str) -> None:
        """The policy of the table whose files are under ``prefix`` of the server's bucket."""
        bucket = self.server.bucket
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:*",
                    "Resource": f"arn:aws:s3:::{bucket}/{prefix.strip('/')}/*",
                },
                {
                    # moto calls listing ListObjectsV2 where AWS says ListBucket; neither can
                    # narrow it to a prefix here (AWS's s3:prefix condition).
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket", "s3:ListObjectsV2"],
                    "Resource": f"arn:aws:s3:::{bucket}",
                },
            ],
        }
        self._policies[table_id] = json.dumps(policy)

    def __call__(self, table_id: str) -> dict[str, Any]:
        policy = self._policies[table_id]
        with self._lock:
            user = f"uc-{len(self.issued)}"
            self._iam.create_user(UserName=user)
            self._iam.put_user_policy(UserName=user, PolicyName="table", PolicyDocument=policy)
            key = self._iam.create_access_key(UserName=user)["AccessKey"]
            issued = IssuedKey(
                table_id,
                user,
                key["AccessKeyId"],
                key["SecretAccessKey"],
                time.time() + self.lifetime_s,
            )
            self.issued.append(issued)
        return {
            "aws_temp_credentials": {
                "access_key_id": issued.key_id,
                "secret_access_key": issued.secret,
            },
            "expiration_time": int(issued.expires_at * 1000),
        }

    def close(self) -> None:
        self._stop.set()

    def _revoke_loop(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                due = [
                    k
                    for k in self.issued
                    if k.expires_at <= time.time() and k.key_id not in self.revoked
                ]
                for key in due:
                    self._iam.delete_access_key(UserName=key.user, AccessKeyId=key.key_id)
                    self.revoked.append(key.key_id)
