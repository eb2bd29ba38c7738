"""Durable local storage."""
