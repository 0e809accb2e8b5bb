# keyvault: CI principals of team web (rendered by 'keyvault policy render')
# Read-only: the team's GUN and delegation keys; never the root path, never a write.

# guns envelopes
path "secret/data/keyvault/v1/teams/web/guns/*" {
  capabilities = ["read"]
}

path "secret/metadata/keyvault/v1/teams/web/guns/*" {
  capabilities = ["read", "list"]
}

# delegations envelopes
path "secret/data/keyvault/v1/teams/web/delegations/*" {
  capabilities = ["read"]
}

path "secret/metadata/keyvault/v1/teams/web/delegations/*" {
  capabilities = ["read", "list"]
}

# Transit key web: decrypt only
path "transit/decrypt/web" {
  capabilities = ["update"]
}
