# keyvault: members of team web (rendered by 'keyvault policy render')
# Every key of the team, root included: back up, restore, rewrap, list.

# envelopes (create-only and compare-and-set writes, reads)
path "secret/data/keyvault/v1/teams/web/*" {
  capabilities = ["create", "read", "update"]
}

# versions, labels and listing below the team's prefix; a write may set only the labels
# (custom_metadata): never max_versions or delete_version_after, which would erase history
path "secret/metadata/keyvault/v1/teams/web/*" {
  capabilities = ["create", "read", "update", "list"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}

path "secret/metadata/keyvault/v1/teams/web" {
  capabilities = ["list"]
}

# each folder's latest versions in one LIST: an unchanged backup reads no key (without it,
# each key is read)
path "secret/detailed-metadata/keyvault/v1/teams/web/*" {
  capabilities = ["list"]
}

# Transit key web
path "transit/encrypt/web" {
  capabilities = ["update"]
}

path "transit/decrypt/web" {
  capabilities = ["update"]
}

path "transit/rewrap/web" {
  capabilities = ["update"]
}

path "transit/keys/web" {
  capabilities = ["read"]
}
