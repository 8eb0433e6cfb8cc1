"""An example third-party merge method for sakura: ``geometric`` (in ``method``; the hooks in ``plugin``)."""
