"""Built-in plugin sakura_trl."""
