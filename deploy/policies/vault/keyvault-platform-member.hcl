# keyvault: members of team platform (rendered by 'keyvault policy render')
# Every key of the team, root included: back up, restore, rewrap, list.

# envelopes (create-only and compare-and-set writes, reads)
path "secret/data/keyvault/v1/teams/platform/*" {
  capabilities = ["create", "read", "update"]
}

# versions, labels and listing below the team's prefix; a write may set only the labels
# (custom_metadata): never max_versions or delete_version_after, which would erase history
path "secret/metadata/keyvault/v1/teams/platform/*" {
  capabilities = ["create", "read", "update", "list"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}

path "secret/metadata/keyvault/v1/teams/platform" {
  capabilities = ["list"]
}

# each folder's latest versions in one LIST: an unchanged backup reads no key (without it,
# each key is read)
path "secret/detailed-metadata/keyvault/v1/teams/platform/*" {
  capabilities = ["list"]
}

# Transit key platform
path "transit/encrypt/platform" {
  capabilities = ["update"]
}

path "transit/decrypt/platform" {
  capabilities = ["update"]
}

path "transit/rewrap/platform" {
  capabilities = ["update"]
}

path "transit/keys/platform" {
  capabilities = ["read"]
}
