#!/bin/sh
# One shot (s3-init): create the versioned bucket keyvault uses. Safe to run again.
set -eu
s3() { aws --endpoint-url "$S3_ENDPOINT" s3api "$@"; }

if s3 head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  echo "bucket $BUCKET exists"
else
  s3 create-bucket --bucket "$BUCKET" >/dev/null
  echo "created bucket $BUCKET"
fi
# keyvault refuses an unversioned bucket unless told otherwise: every backup is a new version.
s3 put-bucket-versioning --bucket "$BUCKET" --versioning-configuration Status=Enabled
echo "versioning enabled on $BUCKET"
