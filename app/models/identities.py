"""Provider identities linked to users (filled in by the OAuth work)."""
