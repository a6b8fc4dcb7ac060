"""The site agent: serves one site over a JSON-lines channel (fleet.sites.protocol)."""
