"""Cornice services, one module per resource."""
