"""keyvault: key custody and backup for Docker Content Trust (Notary) signing keys."""

__version__ = "0.1.0"
