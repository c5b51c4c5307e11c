"""Clients of the outside world and the Dagster resources around them."""
