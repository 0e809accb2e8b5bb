"""Shared helpers for the AWS backend tests (the servers come from tests/fixtures)."""

from __future__ import annotations

from typing import Any

from fixtures.kms import KMS_CREDS, MotoServer, kms_settings
from fixtures.s3 import ADMIN, WeedServer, s3_settings

from keyvault.plugins import BackendOptions
from keyvault.stores.s3 import S3Store
from keyvault.wrappers.awskms import AwsKmsWrapper


def s3_options(weed: WeedServer, creds: tuple[str, str] = ADMIN, **settings: Any) -> BackendOptions:
    env = {"AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1]}
    return BackendOptions(env=env, settings={"s3": s3_settings(weed, **settings)})


def open_s3(weed: WeedServer, uri: str, creds: tuple[str, str] = ADMIN, **settings: Any) -> S3Store:
    return S3Store.from_uri(uri, s3_options(weed, creds, **settings))


def kms_options(moto: MotoServer, **settings: Any) -> BackendOptions:
    env = {"AWS_ACCESS_KEY_ID": KMS_CREDS[0], "AWS_SECRET_ACCESS_KEY": KMS_CREDS[1]}
    return BackendOptions(env=env, settings={"awskms": kms_settings(moto, **settings)})


def open_kms(moto: MotoServer, uri: str, **settings: Any) -> AwsKmsWrapper:
    return AwsKmsWrapper.from_uri(uri, kms_options(moto, **settings))
