# keyvault: CI principals of team platform (rendered by 'keyvault policy render')
# Read-only: the team's GUN and delegation keys; never the root path, never a write.

# guns envelopes
path "secret/data/keyvault/v1/teams/platform/guns/*" {
  capabilities = ["read"]
}

path "secret/metadata/keyvault/v1/teams/platform/guns/*" {
  capabilities = ["read", "list"]
}

# delegations envelopes
path "secret/data/keyvault/v1/teams/platform/delegations/*" {
  capabilities = ["read"]
}

path "secret/metadata/keyvault/v1/teams/platform/delegations/*" {
  capabilities = ["read", "list"]
}

# Transit key platform: decrypt only
path "transit/decrypt/platform" {
  capabilities = ["update"]
}
