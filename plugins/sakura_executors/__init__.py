"""Built-in executors: ``local`` (this process, one stage after another) and ``ray`` (a Ray cluster)."""
