#!/bin/sh
# One shot (openbao-init): KV v2, Transit and the team policies. Safe to run again.
#
# The policies are the HCL files `keyvault policy render` writes into
# deploy/policies/vault/ (one per team and kind: keyvault-<team>-member, -ci).
# Every mount and Transit key they name is created here, so the policies and
# the server agree by construction:
#   path "<mount>/data/..."          -> a KV v2 mount <mount>
#   path "<mount>/encrypt/<key>"     -> a Transit mount <mount> and a derived key <key>
# Each policy also gets a dev token whose ID is the policy name (dev only!).
set -eu

mounts=$(bao secrets list -format=json)
has_mount() { printf '%s' "$mounts" | grep -q "\"$1/\""; }

enable() {  # enable TYPE MOUNT
  if has_mount "$2"; then
    echo "mount $2/ exists"
  else
    bao secrets enable -path="$2" "$1"
    mounts=$(bao secrets list -format=json)
  fi
}

enable kv-v2 secret
bao write secret/config max_versions=0 >/dev/null   # keep every version of every backup
enable transit transit

set -- "$POLICY_DIR"/*.hcl
if [ ! -e "$1" ]; then
  echo "no policies in $POLICY_DIR: run 'keyvault policy render' (docs/teams.md)" >&2
  echo "KV v2 at secret/ and Transit at transit/ are ready; no team policies loaded" >&2
  exit 0
fi

for file in "$@"; do
  name=$(basename "$file" .hcl)
  bao policy write "$name" "$file" >/dev/null
  echo "policy $name loaded"
done

# KV v2 mounts the policies name.
for mount in $(sed -n 's|^path "\([A-Za-z0-9._-]*\)/data/.*|\1|p' "$@" | sort -u); do
  enable kv-v2 "$mount"
done

# Transit keys the policies name: derived AES-256-GCM (docs/vault.md).
sed -n 's|^path "\([A-Za-z0-9._-]*\)/encrypt/\([A-Za-z0-9._-]*\)".*|\1 \2|p' "$@" | sort -u |
while read -r mount key; do
  enable transit "$mount"
  if bao read -format=json "$mount/keys/$key" >/dev/null 2>&1; then
    echo "transit key $mount/$key exists"
  else
    bao write -f "$mount/keys/$key" type=aes256-gcm96 derived=true >/dev/null
    echo "transit key $mount/$key created (derived)"
  fi
done

for file in "$@"; do
  name=$(basename "$file" .hcl)
  if bao token lookup "$name" >/dev/null 2>&1; then
    echo "dev token $name exists"
  else
    # (OpenBao warns that a chosen token ID is hashed with SHA-1 on lookups: dev only.)
    bao token create -id="$name" -policy="$name" -orphan -ttl=768h >/dev/null 2>&1 ||
      { echo "could not create the dev token $name" >&2; exit 1; }
    echo "dev token $name created (VAULT_TOKEN=$name acts as that policy)"
  fi
done
