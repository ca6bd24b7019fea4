"""Typed configuration: the schema Hydra composes into, and the rules checked before any work."""
