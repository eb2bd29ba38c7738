"""Runnable consortium scenarios on one chain."""
