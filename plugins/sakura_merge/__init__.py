"""Built-in plugin sakura_merge."""
