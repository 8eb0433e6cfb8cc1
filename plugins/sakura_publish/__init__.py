"""Built-in plugin sakura_publish."""
