"""``python -m keyvault``."""

from keyvault.cli.app import main

main()
