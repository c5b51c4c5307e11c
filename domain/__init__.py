"""What both the HTTP API and the Dagster code need, importing neither of them."""
