"""Secrets at rest (filled in by the vault work): see app/services/vault.py."""
