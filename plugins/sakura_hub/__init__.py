"""Built-in plugin sakura_hub."""
