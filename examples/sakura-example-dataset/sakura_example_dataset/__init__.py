"""An example third-party dataset adapter for sakura: ``ultrafeedback`` (in ``adapter``; the hooks in ``plugin``)."""
