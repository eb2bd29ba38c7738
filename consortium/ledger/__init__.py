"""Typed Python API over the deployed contracts."""
