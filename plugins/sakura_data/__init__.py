"""Built-in plugin sakura_data."""
