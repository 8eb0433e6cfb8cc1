"""Built-in model sources: ``tiny:`` models generated on the fly, and local directories."""
