"""The guide's "Cloud API provider", made safe: it declares where it connects and the secret it needs."""
